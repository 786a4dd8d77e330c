"""Pebble (Let's Encrypt's ACME test server, Debian's `pebble`) for tests, for real.

`running_pebble(http_port)` starts pebble-challtestsrv as the DNS server
(every name resolves to 127.0.0.1 unless told otherwise) and Pebble, its
HTTP-01 validations sent to `http_port` (a router's), its directory served
over HTTPS with a certificate made here (`Pebble.ca_bundle` trusts it).
Both are stopped when the block ends.

PEBBLE_VA_NOSLEEP=1: validate at once; PEBBLE_VA_ALWAYS_VALID=0: really
fetch the answer; PEBBLE_WFE_NONCEREJECT=0: never reject a good nonce at
random (a test that fails by chance is a defect); PEBBLE_AUTHZREUSE=0: a
renewal proves the domain again.
"""

from __future__ import annotations

import contextlib
import json
import os
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from roost.selfsigned import generate_self_signed
from tests.conftest import free_port, wait_until


@dataclass
class Pebble:
    directory: str  # the ACME directory URL
    ca_bundle: Path  # trusts the directory's HTTPS certificate
    management: str  # Pebble's management API (roots of the issued chains)
    dns_management: str  # challtestsrv's (mock DNS records)

    def set_a(self, host: str, address: str) -> None:
        """Make `host` resolve to `address` for the CA."""
        r = httpx.post(
            f"{self.dns_management}/add-a", json={"host": host, "addresses": [address]}, timeout=10
        )
        r.raise_for_status()

    def set_servfail(self, host: str) -> None:
        """Make every lookup of `host` fail (SERVFAIL)."""
        r = httpx.post(f"{self.dns_management}/set-servfail", json={"host": host}, timeout=10)
        r.raise_for_status()

    def root_pem(self) -> str:
        """The root the issued chains lead to (Pebble makes a new one at every start)."""
        r = httpx.get(f"{self.management}/roots/0", verify=False, timeout=10)
        r.raise_for_status()
        return r.text


@contextlib.contextmanager
def _process(cmd: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env}
        )
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def running_pebble(http_port: int, validity_s: int = 0) -> Iterator[Pebble]:
    """Pebble validating HTTP-01 on `http_port`; certificates valid `validity_s`
    seconds (0: Pebble's default, years)."""
    with tempfile.TemporaryDirectory(prefix="roost-pebble-") as tmp:
        base = Path(tmp)
        cert_pem, key_pem = generate_self_signed(["127.0.0.1", "localhost"])
        (base / "wfe.crt").write_bytes(cert_pem)
        (base / "wfe.key").write_bytes(key_pem)
        port, mgmt, dns, dns_mgmt = free_port(), free_port(), free_port(), free_port()
        config = {
            "pebble": {
                "listenAddress": f"127.0.0.1:{port}",
                "managementListenAddress": f"127.0.0.1:{mgmt}",
                "certificate": str(base / "wfe.crt"),
                "privateKey": str(base / "wfe.key"),
                "httpPort": http_port,
                "tlsPort": free_port(),
                "ocspResponderURL": "",
                "externalAccountBindingRequired": False,
                **({"certificateValidityPeriod": validity_s} if validity_s else {}),
            }
        }
        (base / "pebble.json").write_text(json.dumps(config))
        env = {
            "PEBBLE_VA_NOSLEEP": "1",
            "PEBBLE_VA_ALWAYS_VALID": "0",
            "PEBBLE_WFE_NONCEREJECT": "0",
            "PEBBLE_AUTHZREUSE": "0",
        }
        dns_cmd = [
            "pebble-challtestsrv",
            "-dns01", f"127.0.0.1:{dns}",
            "-management", f"127.0.0.1:{dns_mgmt}",
            "-defaultIPv4", "127.0.0.1",
            "-defaultIPv6", "",
            "-http01", "", "-https01", "", "-tlsalpn01", "",
        ]  # fmt: skip
        pebble_cmd = [
            "pebble", "-config", str(base / "pebble.json"), "-dnsserver", f"127.0.0.1:{dns}"
        ]  # fmt: skip
        log = base / "pebble.log"
        with _process(dns_cmd, {}, log), _process(pebble_cmd, env, log):
            p = Pebble(
                directory=f"https://127.0.0.1:{port}/dir",
                ca_bundle=base / "wfe.crt",
                management=f"https://127.0.0.1:{mgmt}",
                dns_management=f"http://127.0.0.1:{dns_mgmt}",
            )

            def up() -> bool:
                httpx.get(
                    p.directory, verify=ssl.create_default_context(cafile=p.ca_bundle), timeout=2
                ).raise_for_status()
                httpx.get(f"{p.dns_management}/", timeout=2)
                return True

            try:
                wait_until(up, 30, "pebble and its DNS answering")
                yield p
            finally:
                print(log.read_text()[-4000:])
