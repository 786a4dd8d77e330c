"""TLS termination: certificates per domain chosen by SNI, a self-signed default."""

from __future__ import annotations

import asyncio
import json
import ssl
from pathlib import Path
from typing import Any

from cryptography import x509

from roost.selfsigned import generate_self_signed
from roost.wire.messages import TlsCertificate
from tests.router.conftest import app


async def handshake(
    port: int, server_name: str, trust: bytes | None
) -> tuple[x509.Certificate, bytes]:
    ctx = ssl.create_default_context()
    if trust is None:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.load_verify_locations(cadata=trust.decode())
        # OpenSSL never matches a wildcard one label above a TLD ("*.localhost"):
        # the chain check alone proves which certificate was served.
        ctx.check_hostname = not server_name.endswith(".localhost")
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname=server_name
    )
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.write(f"GET /echo HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n\r\n".encode())
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    return x509.load_der_x509_certificate(der), data


def names(cert: x509.Certificate) -> list[str]:
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(v) for v in san.get_values_for_type(x509.DNSName)]


async def test_sni_picks_each_domains_certificate(
    backends: Any, router: Any, tmp_path: Path
) -> None:
    one, two = await backends("one"), await backends("two")
    a_cert, a_key = generate_self_signed(["www.alpha.org"])
    b_cert, b_key = generate_self_signed(["*.beta.org"])
    routes = [
        app(
            "alpha",
            one,
            hostnames=["alpha.localhost", "www.alpha.org"],
            certificates=[
                TlsCertificate(
                    hostnames=["www.alpha.org"], cert_pem=a_cert.decode(), key_pem=a_key.decode()
                )
            ],
        ),
        app("beta", two, hostnames=["beta.localhost", "*.beta.org"]),
    ]
    async with router(routes, tls=True) as r:
        # Verification against each certificate alone proves which one was served.
        cert, data = await handshake(r.tls_port, "www.alpha.org", a_cert)
        assert names(cert) == ["www.alpha.org"]
        body = json.loads(data.partition(b"\r\n\r\n")[2])
        assert body["instance"] == "one"
        assert dict(body["headers"])["x-forwarded-proto"] == "https"
        # No certificate for beta yet: the default (self-signed for the default domain).
        cert, data = await handshake(r.tls_port, "shop.beta.org", None)
        assert "*.localhost" in names(cert) and b'"instance": "two"' in data
        default_pem = (tmp_path / "router/tls/default.crt").read_bytes()
        cert, _ = await handshake(r.tls_port, "alpha.localhost", default_pem)
        assert "*.localhost" in names(cert)
        # A certificate pushed with a route change serves new handshakes at once.
        r.set_routes(
            [
                routes[0],
                app(
                    "beta",
                    two,
                    hostnames=["beta.localhost", "*.beta.org"],
                    certificates=[
                        TlsCertificate(
                            hostnames=["*.beta.org"],
                            cert_pem=b_cert.decode(),
                            key_pem=b_key.decode(),
                        )
                    ],
                ),
            ]
        )
        cert, _ = await handshake(r.tls_port, "shop.beta.org", b_cert)
        assert names(cert) == ["*.beta.org"]


async def test_a_bad_certificate_is_refused_not_fatal(backends: Any, router: Any) -> None:
    one = await backends("one")
    bad = TlsCertificate(hostnames=["bad.org"], cert_pem="not a cert", key_pem="nor a key")
    async with router([app("x", one, hostnames=["bad.org"], certificates=[bad])], tls=True) as r:
        cert, data = await handshake(r.tls_port, "bad.org", None)
        assert "*.localhost" in names(cert) and data.startswith(b"HTTP/1.1 200")
