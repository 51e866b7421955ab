"""Shared-secret authentication and TLS for the agent ↔ master connection.

The secret never crosses the wire: each side proves it knows the secret
with an HMAC over both sides' random nonces (see :mod:`fructosa.wire.protocol`),
so a recorded session cannot be replayed and a rogue master cannot pose as
the real one to harvest data. TLS (optional) adds encryption and, with a CA,
certificate checks.

OpenSSL is loaded only where it is used: ``ssl`` when a TLS context is made,
``hashlib``/``hmac`` when a MAC is computed, so that an agent without TLS can
keep OpenSSL out of its memory altogether (:func:`keep_openssl_out`).
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import ssl

NONCE_BYTES = 16

OPENSSL_MODULES = ("ssl", "_ssl", "_hashlib")
"""The modules that load OpenSSL's libssl/libcrypto into the process."""


def new_nonce() -> str:
    return os.urandom(NONCE_BYTES).hex()


def read_secret(path: str) -> tuple[bytes, str | None]:
    """(secret, warning): the file's content without surrounding whitespace.

    Raises OSError or ValueError with a reason fit for a one-line error.
    """
    with open(path, "rb") as stream:
        secret = stream.read().strip()
        mode = os.fstat(stream.fileno()).st_mode
    if len(secret) < 16:
        raise ValueError("the secret must be at least 16 characters (e.g. openssl rand -hex 32)")
    warning = None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        warning = f"secret file {path} is accessible to others than its owner (mode {mode & 0o777:o}): chmod 600 it"
    return secret, warning


def agent_mac(secret: bytes, master_nonce: str, agent_nonce: str, host: str) -> str:
    import hashlib  # here, not at the top: see keep_openssl_out
    import hmac

    message = f"fructosa-agent|{master_nonce}|{agent_nonce}|{host}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def master_mac(secret: bytes, agent_nonce: str, master_nonce: str) -> str:
    import hashlib
    import hmac

    message = f"fructosa-master|{agent_nonce}|{master_nonce}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def macs_equal(expected: str, received: object) -> bool:
    """Constant-time comparison; anything but the expected hex string is unequal."""
    import hmac

    if not isinstance(received, str):
        return False
    return hmac.compare_digest(expected.encode(), received.encode("utf-8", "surrogatepass"))


def server_context(cert: str, key: str, ca: str | None) -> ssl.SSLContext:
    """TLS for lmaster; with ``ca`` agents must present a certificate it signed."""
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    if ca:
        context.load_verify_locations(ca)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def client_context(ca: str | None, cert: str | None, key: str | None) -> ssl.SSLContext:
    """TLS for lagent: verifies lmaster's certificate and name against ``ca``
    (or the system's CAs when none is given)."""
    import ssl

    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert:
        context.load_cert_chain(cert, key)
    return context


class LinkSecurity(Protocol):
    """The TLS settings of one link (``[lmaster]`` or ``[upstream]``), as the configuration holds them."""

    tls: bool
    tls_cert: str | None
    tls_key: str | None
    tls_ca: str | None


def tls_requested(link: LinkSecurity) -> bool:
    """Whether a link we open asks for TLS: ``tls = yes`` (the system's CAs), a
    ``tls ca`` to verify the other end with, or a ``tls cert`` to present."""
    return bool(link.tls or link.tls_ca or link.tls_cert)


def client_context_for(link: LinkSecurity) -> ssl.SSLContext | None:
    """TLS for a link we open (lagent to lmaster, lmaster to its upstream), or None for plaintext.

    Any TLS setting asks for TLS: ``tls = yes`` (the system's CAs), a ``tls ca`` to
    verify the other end with, or a ``tls cert`` to present. The one place that
    decides it, so an agent and a relaying lmaster never disagree.
    """
    if not tls_requested(link):
        return None
    return client_context(link.tls_ca, link.tls_cert, link.tls_key)


def server_context_for(link: LinkSecurity) -> ssl.SSLContext | None:
    """TLS for lmaster's listening port (``tls cert`` set), or None for plaintext."""
    if not link.tls_cert:
        return None
    return server_context(link.tls_cert, link.tls_key or link.tls_cert, link.tls_ca)


class SensorSettings(Protocol):
    """A ``[sensor:NAME]`` section as the configuration holds it: its name and options' values."""

    @property
    def name(self) -> str: ...

    @property
    def settings(self) -> Mapping[str, object]: ...


SENSORS_NEEDING_SSL = frozenset({"Prometheus"})
"""Sensors whose libraries import ``ssl`` unconditionally: the Prometheus sensor parses
with ``prometheus_client``, whose package imports ``ssl`` (for its HTTPS exposition)."""


def wants_openssl(link: LinkSecurity, sensors: Iterable[SensorSettings] = ()) -> bool:
    """Whether lagent needs OpenSSL: TLS on ``link``, a sensor of
    :data:`SENSORS_NEEDING_SSL`, or an ``https://`` URL in one of the
    ``sensors``' options (an exporter behind TLS is read with
    :mod:`urllib.request`, which needs ``ssl`` for it)."""
    if tls_requested(link):
        return True
    for sensor in sensors:
        if sensor.name in SENSORS_NEEDING_SSL:
            return True
        for value in sensor.settings.values():
            texts = value if isinstance(value, (tuple, list)) else (value,)
            if any(isinstance(text, str) and "https://" in text for text in texts):
                return True
    return False


def keep_openssl_out() -> bool:
    """Make ``ssl`` and ``_hashlib`` unimportable in this process, for a program
    that does not :func:`wants_openssl`.

    Why: OpenSSL (libcrypto, libssl and their Python modules) costs lagent
    about 5 MB of resident memory (a sixth of what it used), and an agent
    without TLS needs none of it. The handshake's HMAC-SHA256 is the same
    bytes from CPython's builtin ``_sha256``: ``hashlib`` and ``hmac`` fall
    back to it when ``_hashlib`` cannot be imported, and ``asyncio``,
    ``http.client`` and ``urllib.request`` already treat a missing ``ssl`` as
    "no TLS here". A ``None`` in :data:`sys.modules` is Python's documented
    way to make ``import`` of a module raise ImportError.

    Call it before anything imports asyncio, hashlib or ssl (lagent does, right
    after reading its configuration). When one of these modules is loaded
    already (inside a test runner, say) it changes nothing, since OpenSSL is
    in memory anyway. Returns whether it kept OpenSSL out. Turning TLS on
    takes a restart afterwards: see :func:`openssl_blocked`.
    """
    if any(name in sys.modules for name in OPENSSL_MODULES):
        return False
    for name in OPENSSL_MODULES:
        sys.modules[name] = None  # type: ignore[assignment]
    return True


def openssl_blocked() -> bool:
    """Whether :func:`keep_openssl_out` kept OpenSSL out of this process: TLS
    cannot be turned on in it until the program restarts."""
    return "ssl" in sys.modules and sys.modules["ssl"] is None
