"""A throwaway PKI for TLS tests, made with the ``openssl`` command line.

The ``cryptography`` package is not a dependency, and ``openssl`` is present
wherever Python's ssl module is built, so certificates come from the CLI.
Everything uses P-256 keys (fast to generate) and carries the extensions
strict X.509 checking asks for (basicConstraints, key identifiers, key
usage), so the files also work where Python enables VERIFY_X509_STRICT.

This module does not import pytest: the session fixture that calls
:func:`make_pki` lives in the test module and skips when openssl is missing.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

MINIMAL_CONFIG = "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\nCN = unused\n"
"""``openssl req`` wants a config file; this one does not depend on the host's."""

CA_EXTENSIONS = (
    "[v3]\nbasicConstraints = critical, CA:TRUE\nkeyUsage = critical, keyCertSign, cRLSign\n"
    "subjectKeyIdentifier = hash\n"
)
LEAF_EXTENSIONS = (
    "[v3]\nbasicConstraints = critical, CA:FALSE\nkeyUsage = critical, digitalSignature\n"
    "extendedKeyUsage = {usage}\nsubjectAltName = {names}\n"
    "subjectKeyIdentifier = hash\nauthorityKeyIdentifier = keyid, issuer\n"
)


class OpenSSLMissing(RuntimeError):
    """No ``openssl`` executable on PATH."""


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Pki:
    ca: Path
    """The CA agents are told to trust."""
    server: CertPair
    """lmaster's certificate for 127.0.0.1 (IP SAN) and localhost (DNS SAN), signed by ``ca``."""
    other_ca: Path
    """An unrelated CA: trusting it instead of ``ca`` must fail verification."""
    wrong_name: CertPair
    """Signed by ``ca`` but issued for another host name only."""
    client: CertPair
    """A client certificate (agent) signed by ``ca``."""


def openssl() -> str:
    path = shutil.which("openssl")
    if path is None:
        raise OpenSSLMissing("the openssl command line tool is not installed")
    return path


def _run(directory: Path, *args: str) -> None:
    result = subprocess.run([openssl(), *args], cwd=directory, capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed:\n{result.stderr}")


def _key(directory: Path, name: str) -> Path:
    key = directory / f"{name}.key"
    _run(directory, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(key))
    return key


def _ca(directory: Path, name: str) -> CertPair:
    key = _key(directory, name)
    cert = directory / f"{name}.pem"
    config = directory / f"{name}.cnf"  # openssl 3.0's req has no -extfile
    config.write_text(MINIMAL_CONFIG + CA_EXTENSIONS)
    _run(
        directory, "req", "-config", str(config), "-x509", "-new", "-key", str(key), "-out", str(cert),
        "-days", "2", "-subj", f"/CN=FrUCToSA test {name}", "-extensions", "v3",
    )  # fmt: skip
    return CertPair(cert, key)


def _leaf(directory: Path, name: str, ca: CertPair, names: str, usage: str) -> CertPair:
    key = _key(directory, name)
    request, cert = directory / f"{name}.csr", directory / f"{name}.pem"
    extensions = directory / f"{name}.ext"
    extensions.write_text(LEAF_EXTENSIONS.format(names=names, usage=usage))
    config = directory / "req.cnf"
    _run(
        directory, "req", "-config", str(config), "-new", "-key", str(key), "-out", str(request), "-subj", f"/CN={name}"
    )
    _run(
        directory, "x509", "-req", "-in", str(request), "-CA", str(ca.cert), "-CAkey", str(ca.key),
        "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(extensions), "-extensions", "v3",
    )  # fmt: skip
    return CertPair(cert, key)


def make_pki(directory: Path) -> Pki:
    """Generate the CAs and certificates in ``directory`` (raises OpenSSLMissing)."""
    openssl()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "req.cnf").write_text(MINIMAL_CONFIG)
    ca = _ca(directory, "ca")
    other = _ca(directory, "other-ca")
    return Pki(
        ca=ca.cert,
        server=_leaf(directory, "lmaster", ca, "IP:127.0.0.1, DNS:localhost", "serverAuth"),
        other_ca=other.cert,
        wrong_name=_leaf(directory, "elsewhere", ca, "DNS:elsewhere.invalid", "serverAuth"),
        client=_leaf(directory, "agent", ca, "DNS:agent.invalid", "clientAuth"),
    )


def pki_or_skip(directory: Path) -> Pki:
    """:func:`make_pki`, or skip the test (with the reason) on a machine without ``openssl``."""
    import pytest

    try:
        return make_pki(directory)
    except OpenSSLMissing as reason:
        pytest.skip(f"TLS tests need a throwaway CA: {reason}")
