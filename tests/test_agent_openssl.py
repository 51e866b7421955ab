"""lagent loads OpenSSL only when it needs TLS.

Without TLS (the default) the agent keeps ``ssl``, ``_ssl`` and ``_hashlib``
out of its process (:func:`fructosa.wire.auth.keep_openssl_out`): ~5 MB of
resident memory. Its handshake MAC then comes from CPython's builtin SHA-256
and must be the very bytes lmaster's OpenSSL computes; with TLS, or an
``https://`` exporter to scrape, everything loads as before; a reload that
asks for TLS in an agent started without it says it needs a restart and
keeps running. Structure and behaviour only: nothing here is timed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from fructosa.agent import lagent
from fructosa.config import LinkConfig, SensorConfig
from fructosa.config.record import replace
from fructosa.wire import auth
from tests.support.carbon import free_ports
from tests.support.configs import agent_ini, master_ini, options_of
from tests.support.daemons import Daemon, script
from tests.support.tls import Pki, pki_or_skip
from tests.support.waiting import log_text, wait_for, wait_for_log

REPO = Path(__file__).resolve().parent.parent
OPENSSL_MODULES = ("ssl", "_ssl", "_hashlib")
SECRET = b"a-secret-of-more-than-sixteen-bytes"

PREPARE = """
import json, sys
from fructosa import programs
cfg = programs.AGENT.load_config(sys.argv[1])
prepared = programs.prepare_agent(cfg, sys.argv[2])
import asyncio, hashlib, hmac  # what start() imports next, and what a MAC needs
from fructosa.wire import auth
agent = prepared.run.__self__
maps = open("/proc/self/maps").read()
print(json.dumps({
    "loaded": {name: sys.modules.get(name, "absent") is not None for name in ("ssl", "_ssl", "_hashlib")},
    "tls_context": type(agent.sender.tls).__name__,
    "libraries": sorted({name for name in ("libssl", "libcrypto") if name in maps}),
    "agent_mac": auth.agent_mac(sys.argv[3].encode(), "m" * 32, "a" * 32, "node1"),
    "master_mac": auth.master_mac(sys.argv[3].encode(), "a" * 32, "m" * 32),
}))
"""


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return pki_or_skip(tmp_path_factory.mktemp("pki"))


def prepare_in_fresh_interpreter(tmp_path: Path, **ini: object) -> dict:
    conf = tmp_path / "lagent.conf"
    conf.write_text(agent_ini(tmp_path, 7888, **ini))  # type: ignore[arg-type]
    result = subprocess.run(
        [sys.executable, "-c", PREPARE, str(conf), str(tmp_path / "lagent.status.json"), SECRET.decode()],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def openssl_macs() -> tuple[str, str]:
    """The handshake's MACs as this process computes them, with OpenSSL's HMAC."""
    assert sys.modules.get("_hashlib") is not None  # so the comparison is builtin against OpenSSL
    agent = hmac.new(SECRET, f"fructosa-agent|{'m' * 32}|{'a' * 32}|node1".encode(), hashlib.sha256).hexdigest()
    master = hmac.new(SECRET, f"fructosa-master|{'a' * 32}|{'m' * 32}".encode(), hashlib.sha256).hexdigest()
    return agent, master


def test_agent_without_tls_loads_no_openssl_and_computes_the_same_macs(tmp_path: Path) -> None:
    outcome = prepare_in_fresh_interpreter(tmp_path)
    assert outcome["loaded"] == {name: False for name in OPENSSL_MODULES}
    assert outcome["libraries"] == []
    assert outcome["tls_context"] == "NoneType"
    assert (outcome["agent_mac"], outcome["master_mac"]) == openssl_macs()


def test_agent_with_tls_loads_ssl_as_before(tmp_path: Path, pki: Pki) -> None:
    outcome = prepare_in_fresh_interpreter(tmp_path, lmaster={"tls ca": pki.ca})
    assert outcome["loaded"] == {name: True for name in OPENSSL_MODULES}
    assert outcome["tls_context"] == "SSLContext"
    assert (outcome["agent_mac"], outcome["master_mac"]) == openssl_macs()


def test_agent_scraping_an_https_exporter_keeps_ssl(tmp_path: Path) -> None:
    sensors = {"Prometheus": {"time_interval": 10, "urls": "https://127.0.0.1:9100/metrics"}}
    outcome = prepare_in_fresh_interpreter(tmp_path, sensors=sensors)
    assert outcome["loaded"]["ssl"] is True
    assert outcome["tls_context"] == "NoneType"  # no TLS to lmaster: only the scrape needs ssl


def test_keeping_openssl_out_changes_nothing_once_it_is_loaded() -> None:
    assert auth.keep_openssl_out() is False  # ssl is loaded in this test process
    assert sys.modules["ssl"] is ssl and not auth.openssl_blocked()


def test_tls_wanted_by_the_link_a_sensor_or_an_https_setting() -> None:
    plain = LinkConfig(secret=SECRET)
    http = SensorConfig("Scraper", 10, {"urls": "http://127.0.0.1:9100/metrics", "timeout": 5.0, "x": None})
    assert not auth.wants_openssl(plain, [http, SensorConfig("CPUPercent", 1, {"percpu": True})])
    for https in ("http://a/metrics https://b/metrics", ("http://a/metrics", "https://b/metrics")):
        assert auth.wants_openssl(plain, [http, SensorConfig("Scraper", 10, {"urls": https})])
    # prometheus_client's package imports ssl, plain-HTTP exporters or not
    assert auth.wants_openssl(plain, [SensorConfig("Prometheus", 10, {"urls": "http://127.0.0.1:9100/metrics"})])
    for change in ({"tls": True}, {"tls_ca": "/ca.pem"}, {"tls_cert": "/agent.pem"}):
        tls = replace(plain, **change)
        assert auth.wants_openssl(tls) and auth.tls_requested(tls)


def test_real_agent_without_tls_authenticates_and_a_reload_asking_for_tls_says_restart(tmp_path: Path) -> None:
    """A real lagent (secret, no TLS) against a real lmaster: the builtin HMAC is
    accepted, no OpenSSL library is mapped, and ``tls = yes`` on reload is a
    log line, not a crash; the agent stays connected in plaintext."""
    (port,) = free_ports(1)
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    link = f"secret file = {secret}\n"
    master_conf = tmp_path / "lmaster.conf"
    master_conf.write_text(master_ini(tmp_path, port, level="INFO", lmaster=options_of(link)))
    agent_log = tmp_path / "node1.log"
    agent_conf = tmp_path / "node1.conf"
    ini = {"hostname": "node1", "level": "INFO", "sensors": {"VirtualMemory": {"time_interval": 1}}}
    agent_conf.write_text(agent_ini(tmp_path, port, lmaster=options_of(link), **ini))  # type: ignore[arg-type]
    with Daemon("lmaster", master_conf, tmp_path / "lmaster").start(listen_port=port) as master:
        with Daemon("lagent", agent_conf, tmp_path / "node1").start() as agent:
            wait_for_log(agent_log, f"connected to lmaster 127.0.0.1:{port}", timeout=30)
            maps = Path(f"/proc/{agent.pid}/maps").read_text()
            assert "libcrypto" not in maps and "libssl" not in maps and "_hashlib" not in maps

            agent_conf.write_text(agent_ini(tmp_path, port, lmaster=options_of(link + "tls = yes\n"), **ini))  # type: ignore[arg-type]
            reload = subprocess.run(
                [script("lagent"), "-c", str(agent_conf), "-p", str(agent.pidfile), "reload"],
                capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            assert reload.returncode == 0, reload.stderr
            wait_for_log(agent_log, "configuration reloaded from", timeout=30)
            assert lagent.TLS_NEEDS_RESTART in log_text(agent_log)
            batches = wait_for(lambda: json_status(agent.pidfile).get("batches_sent", 0), 30, "batches sent")
            wait_for(lambda: json_status(agent.pidfile).get("batches_sent", 0) > batches, 30, "more batches")
            assert agent.running and json_status(agent.pidfile)["connected"] is True
        assert "Traceback" not in agent.output() and "Traceback" not in master.output()
    assert "authentication failed" not in log_text(tmp_path / "lmaster.log")


def json_status(pidfile: Path) -> dict:
    """The running agent's own status report (written next to its pidfile), {} until there is one."""
    path = pidfile.with_name(pidfile.name.removesuffix(".pid") + ".status.json")
    try:
        return json.loads(path.read_text()).get("agent", {})
    except (FileNotFoundError, ValueError):
        return {}


def test_no_process_keeps_openssl_out_by_accident() -> None:
    """The mechanism is lagent's alone: importing FrUCToSA blocks nothing."""
    code = "import sys, fructosa.programs, fructosa.agent, fructosa.master; print(sys.modules.get('ssl', 0) is None)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
