"""Shared secret and TLS between real lagents and a real lmaster.

Every refusal is checked three ways: the log line an admin would look for
(on the side that refuses), the absence of the refused agent's metrics in
the real carbon-cache's whisper files, and a control agent whose data does
land, so "nothing stored" is not just "not stored yet".
"""

from __future__ import annotations

import json
import os
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest

from fructosa.wire import auth, protocol
from tests.support.carbon import CarbonCache, free_ports
from tests.support.configs import agent_ini, master_ini, options_of
from tests.support.daemons import Daemon
from tests.support.peer import Peer, closed_by_peer, handshake, hello_frame, read_frame
from tests.support.tls import Pki, pki_or_skip
from tests.support.waiting import wait_for_line

SECRET = b"0123456789abcdef-the-right-shared-secret"
WRONG_SECRET = b"fedcba9876543210-somebody-elses-secret"
SENSORS = {"VirtualMemory": {"time_interval": 0.5}}
METRIC = "VirtualMemory.percent"
"""What every test agent measures: one datapoint per agent every 0.5 s."""

AUTH_FAILED = r"disconnected 127\.0\.0\.1:\d+: authentication failed"


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return pki_or_skip(tmp_path_factory.mktemp("pki"))


class Site:
    """One lmaster and its agents under ``workdir``, all stopped at the end.

    ``link`` arguments are the security lines of the ``[lmaster]`` section
    (``secret file = …``, ``tls … = …``); everything else is fixed: loopback,
    free ports, a 2 s peer timeout, spools and logs in ``workdir``.
    """

    def __init__(self, workdir: Path, carbon: CarbonCache, stack: ExitStack) -> None:
        self.workdir = workdir
        self.carbon = carbon
        self.stack = stack
        (self.port,) = free_ports(1)
        self.master_log = workdir / "lmaster.log"
        self.master_daemon: Daemon | None = None
        self.daemons: list[Daemon] = []

    def secret_file(self, name: str, secret: bytes, mode: int = 0o600) -> Path:
        path = self.workdir / name
        path.write_bytes(secret + b"\n")
        path.chmod(mode)
        return path

    def master(self, link: str = "") -> Daemon:
        conf = self.workdir / "lmaster.conf"
        options = {"peer timeout": 2, **options_of(link)}
        conf.write_text(
            master_ini(
                self.workdir, self.port, self.carbon.pickle_port, log=self.master_log, level="INFO", lmaster=options
            )
        )
        daemon = Daemon("lmaster", conf, self.workdir / "lmaster")
        self.stack.callback(daemon.stop)
        self.daemons.append(daemon)
        self.master_daemon = daemon.start(listen_port=self.port)
        return daemon

    def agent(self, name: str, link: str = "", host: str = "127.0.0.1") -> Daemon:
        conf = self.workdir / f"{name}.conf"
        conf.write_text(
            agent_ini(
                self.workdir,
                self.port,
                hostname=name,
                master_host=host,
                level="INFO",
                lmaster=options_of(link),
                sensors=SENSORS,
            )
        )
        daemon = Daemon("lagent", conf, self.workdir / name)
        self.stack.callback(daemon.stop)
        self.daemons.append(daemon)
        return daemon.start()

    def agent_log(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def stored(self, name: str) -> bool:
        """Whether carbon holds any metric of host ``name``."""
        return (self.carbon.data_dir / name).exists()

    def wait_past(self, control: str, moment: float, seconds: float = 2.0, metric: str = METRIC) -> None:
        """Wait until the control agent's data reaches ``seconds`` past ``moment``:
        the pipeline demonstrably delivered everything accepted until then."""
        self.carbon.wait_for(f"{control}.{metric}", lambda points: points[-1][0] >= moment + seconds, timeout=20)

    def stop_master(self) -> None:
        """Stop lmaster now (it logs its counters when it stops)."""
        assert self.master_daemon is not None and self.master_daemon.running, "lmaster died"
        self.master_daemon.stop()
        self.master_daemon = None


@pytest.fixture
def site(tmp_path: Path, carbon: CarbonCache) -> Iterator[Site]:
    with ExitStack() as stack:
        site = Site(tmp_path, carbon, stack)
        yield site
        if site.master_daemon is not None:
            assert site.master_daemon.running, f"lmaster died:\n{site.master_daemon.output()[-3000:]}"
    for daemon in site.daemons:  # stopped now: refusals are log lines, never crashes
        assert "Traceback" not in daemon.output(), f"{daemon.program} raised:\n{daemon.output()[-3000:]}"


def secret_line(path: Path) -> str:
    return f"secret file = {path}\n"


def tls_master(pki: Pki) -> str:
    return f"tls cert = {pki.server.cert}\ntls key = {pki.server.key}\n"


# -- shared secret ------------------------------------------------------------


def test_right_secret_on_both_sides_delivers(site: Site) -> None:
    secret = secret_line(site.secret_file("secret", SECRET))
    site.master(secret)
    site.agent("goodnode", secret)
    site.carbon.wait_for(f"goodnode.{METRIC}", timeout=20)
    master_log = site.master_log.read_text()
    assert "shared secret required" in master_log
    assert re.search(r"agent goodnode \(127\.0\.0\.1:\d+, lagent [^)]+\) connected", master_log)
    for log in (master_log, site.agent_log("goodnode").read_text()):
        assert "no secret file configured" not in log
        assert "accessible to others" not in log


def test_agent_with_wrong_secret_is_refused_and_logged_once(site: Site) -> None:
    site.master(secret_line(site.secret_file("secret", SECRET)))
    site.agent("goodnode", secret_line(site.secret_file("secret", SECRET)))
    site.agent("intruder", secret_line(site.secret_file("wrong-secret", WRONG_SECRET)))
    wait_for_line(
        site.agent_log("intruder"), r"cannot reach lmaster 127\.0\.0\.1:\d+ \(lmaster refused: authentication"
    )
    refused_at = time.time()
    # The agent retries with a 0.5 s, 1 s, 2 s... backoff: by 2 s later it
    # has been refused at least three times.
    site.wait_past("goodnode", refused_at)
    assert not site.stored("intruder")
    site.stop_master()
    master_log = site.master_log.read_text()
    lines = re.findall(AUTH_FAILED + r".*", master_log)
    assert len(lines) == 1, lines
    assert "agent 'intruder' does not know the shared secret" in lines[0]
    rejected = int(re.search(r"\((\d+) rejected\)", master_log).group(1))
    assert rejected >= 2, "the agent was refused only once: the rate limit was not exercised"


def test_agent_without_secret_is_refused_by_a_master_with_one(site: Site) -> None:
    site.master(secret_line(site.secret_file("secret", SECRET)))
    site.agent("goodnode", secret_line(site.secret_file("secret", SECRET)))
    site.agent("nosecret")
    wait_for_line(site.agent_log("nosecret"), r"cannot reach lmaster .*lmaster refused: authentication failed")
    line = wait_for_line(site.master_log, AUTH_FAILED + r".*").group(0)
    assert "agent 'nosecret' sent no secret proof (no secret file on the agent?)" in line
    site.wait_past("goodnode", time.time())
    assert not site.stored("nosecret")
    assert "no secret file configured: lmaster cannot tell this agent from an impostor" in (
        site.agent_log("nosecret").read_text()
    )


def test_agent_with_secret_refuses_a_master_without_one(site: Site) -> None:
    site.master()
    site.agent("plainnode")  # control: the master accepts agents without a secret
    site.agent("careful", secret_line(site.secret_file("secret", SECRET)))
    wait_for_line(
        site.agent_log("careful"),
        r"cannot reach lmaster .*lmaster does not authenticate agents \(no secret file there\); not sending to it",
    )
    site.wait_past("plainnode", time.time())
    assert not site.stored("careful")
    assert not re.search(r"agent careful .* connected", site.master_log.read_text())


def test_without_secret_on_either_side_it_works_with_warnings(site: Site) -> None:
    site.master()
    site.agent("open")
    site.carbon.wait_for(f"open.{METRIC}", timeout=20)
    assert "WARNING fructosa.master: no secret file configured: any host that reaches the port can send data" in (
        site.master_log.read_text()
    )
    assert "WARNING fructosa.agent: no secret file configured: lmaster cannot tell this agent from an impostor" in (
        site.agent_log("open").read_text()
    )


def test_secret_file_readable_by_others_gives_a_warning(site: Site) -> None:
    loose = site.secret_file("loose-secret", SECRET, mode=0o644)
    site.master(secret_line(loose))
    site.agent("goodnode", secret_line(loose))
    site.carbon.wait_for(f"goodnode.{METRIC}", timeout=20)  # a warning, not a refusal
    expected = f"secret file {loose} is accessible to others than its owner (mode 644): chmod 600 it"
    assert expected in site.master_log.read_text()
    assert expected in site.agent_log("goodnode").read_text()


# -- raw peers: precise about what reaches the master ---------------------------


def evil_pickles(marker: Path) -> list[bytes]:
    """Hand-built pickles that create ``marker`` if anything unpickles them freely."""
    path = str(marker).encode()
    return [
        b"\x80\x02]q\x00(cbuiltins\nopen\nq\x01X" + struct.pack("<I", len(path)) + path + b"X\x01\x00\x00\x00w\x86Ra.",
        b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00]\x8c\x08builtins\x8c\x04open\x93\x8c"
        + bytes([len(path)])
        + path
        + b"\x8c\x01w\x86Ra.",
        b"\x80\x02](" + b"V" + path + b"\nVw\nibuiltins\nopen\na.",
    ]


def samples_frame(host: str, pickled: bytes | None = None) -> bytes:
    """An ``S`` frame: valid samples of ``host``, or the given pickle."""
    if pickled is None:
        return protocol.encode_samples([{"host": host, "sensor": "Sneak", "time": time.time(), "value": 1.0}])
    return protocol.encode_frame(protocol.SAMPLES, os.urandom(24) + pickled)


class ControlPeer(threading.Thread):
    """An authenticated raw peer sending ``control.Seq.n`` every 0.1 s."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.peer = Peer(port, "control", SECRET)
        self.stop_event = threading.Event()
        self.error: Exception | None = None

    def run(self) -> None:
        try:
            count = 0
            while not self.stop_event.is_set():
                count += 1
                self.peer.send([{"host": "control", "sensor": "Seq", "time": time.time(), "value": {"n": count}}])
                self.stop_event.wait(0.1)
        except Exception as error:  # reported by the test
            self.error = error
        finally:
            self.peer.close()

    def finish(self) -> None:
        self.stop_event.set()
        self.join(5)
        assert self.error is None, f"control peer disturbed: {self.error!r}"


@pytest.fixture
def secret_master(site: Site) -> Site:
    site.master(secret_line(site.secret_file("secret", SECRET)))
    return site


def test_nothing_after_a_failed_hello_is_decoded(secret_master: Site, tmp_path: Path) -> None:
    """Hello with a wrong MAC, then samples and code-executing pickles in the
    same write: refused before the frames behind the hello are looked at."""
    site = secret_master
    marker = tmp_path / "pwned"
    control = ControlPeer(site.port)
    control.start()
    with socket.create_connection(("127.0.0.1", site.port), timeout=5) as sock:
        kind, payload = read_frame(sock)
        assert kind == protocol.CHALLENGE
        challenge = protocol.decode_json(payload)
        assert challenge["auth"] is True
        frames = [samples_frame("sneaky")] + [samples_frame("", pickled) for pickled in evil_pickles(marker)]
        sock.sendall(hello_frame("sneaky", challenge, WRONG_SECRET) + b"".join(frames))
        kind, payload = read_frame(sock)
        assert (kind, protocol.decode_json(payload)) == (protocol.WELCOME, {"error": "authentication failed"})
        address = f"127.0.0.1:{sock.getsockname()[1]}"
        assert closed_by_peer(sock, timeout=5)
    line = wait_for_line(site.master_log, rf"disconnected {re.escape(address)}: .*").group(0)
    assert "authentication failed: agent 'sneaky' does not know the shared secret" in line
    site.wait_past("control", time.time(), metric="Seq.n")
    control.finish()
    assert not site.stored("sneaky")
    assert not marker.exists(), "a pickle sent before authentication was executed"


@pytest.mark.parametrize("first", ["samples", "evil pickle", "heartbeat"])
def test_peer_skipping_the_hello_is_disconnected(secret_master: Site, tmp_path: Path, first: str) -> None:
    site = secret_master
    marker = tmp_path / "pwned"
    control = ControlPeer(site.port)
    control.start()
    frame = {
        "samples": samples_frame("skipper"),
        "evil pickle": samples_frame("", evil_pickles(marker)[0]),
        "heartbeat": protocol.encode_frame(protocol.HEARTBEAT, b""),
    }[first]
    with socket.create_connection(("127.0.0.1", site.port), timeout=5) as sock:
        sock.sendall(frame + samples_frame("skipper"))  # without even reading the challenge
        address = f"127.0.0.1:{sock.getsockname()[1]}"
        assert closed_by_peer(sock, timeout=5)
    line = wait_for_line(site.master_log, rf"disconnected {re.escape(address)}: .*").group(0)
    assert "bad hello: first frame is" in line and "not a hello" in line
    site.wait_past("control", time.time(), metric="Seq.n")
    control.finish()
    assert not site.stored("skipper")
    assert not marker.exists()


def test_a_recorded_hello_cannot_be_replayed(secret_master: Site) -> None:
    """The MAC covers the master's fresh nonce: yesterday's hello is worthless."""
    site = secret_master
    with socket.create_connection(("127.0.0.1", site.port), timeout=5) as first:
        _, payload = read_frame(first)
        recorded = hello_frame("replayed", protocol.decode_json(payload), SECRET)
        first.sendall(recorded)
        kind, payload = read_frame(first)
        assert kind == protocol.WELCOME and "error" not in protocol.decode_json(payload)
    with socket.create_connection(("127.0.0.1", site.port), timeout=5) as second:
        read_frame(second)
        second.sendall(recorded + samples_frame("replayed"))
        _, payload = read_frame(second)
        assert protocol.decode_json(payload) == {"error": "authentication failed"}
        assert closed_by_peer(second, timeout=5)
    wait_for_line(site.master_log, AUTH_FAILED + r": agent 'replayed' does not know the shared secret")


def test_failed_authentication_is_logged_once_per_address(secret_master: Site) -> None:
    site = secret_master
    for attempt in range(20):
        peer = Peer(site.port, f"guess{attempt}", WRONG_SECRET if attempt % 2 else None)
        try:
            assert peer.welcome == {"error": "authentication failed"}
            assert closed_by_peer(peer.sock, timeout=5)
        finally:
            peer.close()
    good = Peer(site.port, "legit", SECRET)  # the master still serves, and has logged by now
    try:
        assert "error" not in good.welcome
        good.send([{"host": "legit", "sensor": "Seq", "time": time.time(), "value": 1}])
        assert len(good.read_acks()) == 1
    finally:
        good.close()
    wait_for_line(site.master_log, r"agent legit \(127\.0\.0\.1:\d+, test-peer\) connected")
    lines = re.findall(AUTH_FAILED + r".*", site.master_log.read_text())
    assert len(lines) == 1, lines
    assert "agent 'guess0' sent no secret proof" in lines[0]


def test_agent_refuses_a_master_that_does_not_know_the_secret(site: Site) -> None:
    """A rogue lmaster asking for authentication but unable to prove it knows
    the secret gets a hello and nothing else."""
    listener = socket.create_server(("127.0.0.1", site.port))
    listener.settimeout(20)
    agent_conf_link = secret_line(site.secret_file("secret", SECRET))
    received: list[bytes] = []
    with listener:
        site.agent("victim", agent_conf_link)
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(10)
            conn.sendall(
                protocol.encode_json(
                    protocol.CHALLENGE, {"protocol": "fructosa", "version": 1, "nonce": auth.new_nonce(), "auth": True}
                )
            )
            kind, payload = read_frame(conn)
            assert kind == protocol.HELLO
            hello = json.loads(payload)
            assert hello["host"] == "victim" and len(hello["mac"]) == 64
            fake_mac = auth.master_mac(WRONG_SECRET, hello["nonce"], "whatever")
            conn.sendall(
                protocol.encode_json(
                    protocol.WELCOME, {"protocol": "fructosa", "version": 1, "master": "rogue", "mac": fake_mac}
                )
            )
            while chunk := conn.recv(65536):  # until the agent hangs up
                received.append(chunk)
    assert received == [], "the agent sent something to a master that failed to authenticate"
    wait_for_line(site.agent_log("victim"), r"lmaster failed to prove it knows the secret; not sending to it")


# -- TLS ----------------------------------------------------------------------


def test_tls_with_the_right_ca_delivers(site: Site, pki: Pki) -> None:
    site.master(tls_master(pki))
    site.agent("tlsnode", f"tls ca = {pki.ca}\n")
    site.carbon.wait_for(f"tlsnode.{METRIC}", timeout=20)
    assert re.search(r"listening on 127\.0\.0\.1 port \d+ for agents \(TLS\)", site.master_log.read_text())
    assert re.search(r"sending to lmaster 127\.0\.0\.1:\d+ over TLS", site.agent_log("tlsnode").read_text())


def deliver_over_tls(site: Site, ca: Path, server_hostname: str, host: str) -> None:
    """Control: a raw TLS peer trusting ``ca`` gets a sample into whisper."""
    context = auth.client_context(str(ca), None, None)
    with socket.create_connection(("127.0.0.1", site.port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=server_hostname) as sock:
            assert "error" not in handshake(sock, host)
            sample = {"host": host, "sensor": "Seq", "time": time.time(), "value": 1}
            sock.sendall(protocol.encode_samples([sample], os.urandom(16), 1))
            assert read_frame(sock)[0] == protocol.ACK
    site.carbon.wait_for(f"{host}.Seq", timeout=10)


@pytest.mark.parametrize(
    ("problem", "link", "expected"),
    [
        ("wrong CA", "tls ca = {pki.other_ca}", r"unable to get local issuer certificate"),
        ("system CAs", "tls = yes", r"unable to get local issuer certificate"),
        (
            "wrong name",
            "tls ca = {pki.ca}",
            r"(IP address|Hostname) mismatch, certificate is not valid for '127\.0\.0\.1'",
        ),
    ],
    ids=["wrong CA", "system CAs", "wrong name"],
)
def test_agent_refuses_an_untrusted_master_certificate(
    site: Site, pki: Pki, problem: str, link: str, expected: str
) -> None:
    served = pki.wrong_name if problem == "wrong name" else pki.server
    site.master(f"tls cert = {served.cert}\ntls key = {served.key}\n")
    site.agent("doubter", link.format(pki=pki) + "\n")
    wait_for_line(
        site.agent_log("doubter"),
        rf"cannot reach lmaster 127\.0\.0\.1:\d+ \(TLS certificate of lmaster not trusted: {expected}",
    )
    deliver_over_tls(site, pki.ca, "elsewhere.invalid" if problem == "wrong name" else "127.0.0.1", "control")
    assert not site.stored("doubter")
    assert not re.search(r"agent doubter .* connected", site.master_log.read_text())


def test_plaintext_agent_gets_nothing_through_to_a_tls_master(site: Site, pki: Pki) -> None:
    site.master(tls_master(pki))
    site.agent("tlsnode", f"tls ca = {pki.ca}\n")
    site.agent("plain")
    wait_for_line(
        site.agent_log("plain"),
        r"cannot reach lmaster .*connection closed by lmaster during the handshake \(wrong secret or TLS settings\?\)",
    )
    site.wait_past("tlsnode", time.time())
    assert not site.stored("plain")


def test_tls_and_secret_together_deliver_over_dns_name(site: Site, pki: Pki) -> None:
    secret = secret_line(site.secret_file("secret", SECRET))
    site.master(tls_master(pki) + secret)
    site.agent("both", f"tls ca = {pki.ca}\n" + secret, host="localhost")
    site.agent("nosecret", f"tls ca = {pki.ca}\n", host="localhost")
    site.carbon.wait_for(f"both.{METRIC}", timeout=20)
    line = wait_for_line(site.master_log, AUTH_FAILED + r".*").group(0)
    assert "agent 'nosecret' sent no secret proof" in line
    site.wait_past("both", time.time())
    assert not site.stored("nosecret")


def test_master_requiring_client_certificates(site: Site, pki: Pki) -> None:
    """With ``tls ca`` on lmaster, an agent must show a certificate from that CA."""
    site.master(tls_master(pki) + f"tls ca = {pki.ca}\n")
    site.agent("withcert", f"tls ca = {pki.ca}\ntls cert = {pki.client.cert}\ntls key = {pki.client.key}\n")
    site.agent("nocert", f"tls ca = {pki.ca}\n")
    site.carbon.wait_for(f"withcert.{METRIC}", timeout=20)
    wait_for_line(site.agent_log("nocert"), r"cannot reach lmaster 127\.0\.0\.1:\d+ \(")
    site.wait_past("withcert", time.time())
    assert not site.stored("nocert")
