"""Off loopback the controller serves its API over HTTPS with its own certificate.

The daemon test runs a real `roost controller` bound on a non-loopback
address (a test bridge's address in this namespace, see tests/cluster/harness)
and talks to it with httpx and the real CLI.
"""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509

from roost.controller.apitls import (
    ApiTlsError,
    api_certificate,
    api_scheme,
    api_url,
    certificate_names,
    self_signed_certificate,
)
from roost.settings import Settings
from tests.cluster.harness import Network

REPO = Path(__file__).resolve().parents[2]


def test_scheme_follows_the_bind_address() -> None:
    assert api_scheme(Settings(bind_host="127.0.0.1")) == "http"
    assert api_scheme(Settings(bind_host="localhost")) == "http"
    assert api_scheme(Settings(bind_host="::1")) == "http"
    assert api_scheme(Settings(bind_host="10.0.0.5")) == "https"
    assert api_scheme(Settings(bind_host="0.0.0.0")) == "https"
    assert api_scheme(Settings(bind_host="127.0.0.1", api_tls_cert="/x.pem")) == "https"
    assert api_url(Settings(bind_host="10.0.0.5", api_port=9)) == "https://10.0.0.5:9"
    assert api_url(Settings(bind_host="0.0.0.0", api_port=9)) == "https://127.0.0.1:9"
    assert api_url(Settings(bind_host="fd00::2", api_port=9)) == "https://[fd00::2]:9"


def test_certificate_names() -> None:
    names = certificate_names("10.0.0.5", ["Box1", "box1.lan", "10.0.0.5"], ["api.example.com"])
    assert names[:4] == ["10.0.0.5", "api.example.com", "box1", "box1.lan"]
    assert names[4:] == ["localhost", "127.0.0.1", "::1"]
    assert certificate_names("0.0.0.0", [], [])[0] == "localhost"


def test_self_signed_certificate_is_private_and_kept(tmp_path: Path) -> None:
    d = tmp_path / "controller" / "tls"
    first = self_signed_certificate(d, ["10.0.0.5", "box1"])
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    assert stat.S_IMODE(first.keyfile.stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(first.certfile.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    assert san.get_values_for_type(x509.DNSName) == ["box1"]
    # kept across restarts: clients that trust it keep trusting it
    assert self_signed_certificate(d, ["other"]).fingerprint == first.fingerprint
    # a start killed between key and certificate: a new pair, never a mismatch
    first.certfile.unlink()
    again = self_signed_certificate(d, ["10.0.0.5"])
    assert again.fingerprint != first.fingerprint


def test_loopback_stays_plain_and_configured_certificates_are_checked(tmp_path: Path) -> None:
    assert api_certificate(tmp_path, Settings(bind_host="127.0.0.1")) is None
    assert not (tmp_path / "controller").exists()
    mine = self_signed_certificate(tmp_path / "a", ["localhost"])
    other = self_signed_certificate(tmp_path / "b", ["localhost"])
    ok = Settings(api_tls_cert=str(mine.certfile), api_tls_key=str(mine.keyfile))
    assert api_certificate(tmp_path, ok) is not None
    for bad in (
        Settings(api_tls_cert=str(mine.certfile)),
        Settings(api_tls_cert=str(mine.certfile), api_tls_key=str(other.keyfile)),
        Settings(api_tls_cert=str(tmp_path / "nope"), api_tls_key=str(mine.keyfile)),
    ):
        with pytest.raises(ApiTlsError):
            api_certificate(tmp_path, bad)


def _roost(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("ROOST_")}
    full.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "roost", *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@pytest.fixture
def bridge_address(tmp_path: Path) -> Iterator[str]:
    net = Network(tmp_path / "net")
    try:
        net.create()
        yield net.gateway
    finally:
        net.close()


def test_controller_off_loopback_serves_https(tmp_path: Path, bridge_address: str) -> None:
    host = bridge_address
    data = tmp_path / "data"
    bundles = tmp_path / "bundles"
    state = f"sqlite:///{tmp_path / 'state.db'}"
    for args in (
        ("cluster", "init", "--controllers", host, "--state", state, "--out", str(bundles)),
        ("--data", str(data), "cluster", "join", str(bundles / f"{host}.tar.gz")),
    ):
        r = _roost(*args)
        assert r.returncode == 0, r.stdout + r.stderr
    port = _free_port(host)
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOST_")}
    env.update(ROOST_BIND_HOST=host, ROOST_API_PORT=str(port), ROOST_LOG_LEVEL="INFO")
    log = tmp_path / "controller.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "roost", "--data", str(data), "controller"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    try:
        ca = data / "controller" / "tls" / "api.pem"
        url = f"https://{host}:{port}"
        trust: ssl.SSLContext | None = None
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            if ca.exists():
                trust = ssl.create_default_context(cafile=str(ca))
                with contextlib.suppress(httpx.TransportError):
                    if httpx.get(f"{url}/api/health", verify=trust, timeout=1).is_success:
                        break
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert stat.S_IMODE((data / "controller" / "tls" / "api.key").stat().st_mode) == 0o600
        # Written by the controller before its API answered.
        token = _roost("--data", str(data), "cluster", "admin-token").stdout.strip()
        assert token.startswith("rst_")
        assert "SHA-256" in log.read_text()
        h = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{url}/api/apps", headers=h, verify=trust).json() == []
        # Nothing is served in clear there.
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://{host}:{port}/api/health", timeout=5)
        # An unknown certificate is refused: a man in the middle gets nothing.
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"{url}/api/health", timeout=5)
        # /metrics from another machine's address: an admin's token.
        assert httpx.get(f"{url}/metrics", verify=trust).status_code == 401
        assert httpx.get(f"{url}/metrics", headers=h, verify=trust).status_code == 200
        # The CLI with the controller's certificate; without it, a hint.
        api = {"ROOST_API": url, "ROOST_TOKEN": token}
        r = _roost(
            "--data", str(tmp_path / "cli"), "apps", "list", env={**api, "ROOST_API_CA": str(ca)}
        )
        assert r.returncode == 0, r.stdout + r.stderr
        r = _roost("--data", str(tmp_path / "cli"), "apps", "list", env=api)
        assert r.returncode != 0 and "ROOST_API_CA" in r.stdout + r.stderr
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
