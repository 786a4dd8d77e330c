"""Certificates by ACME through the whole platform, against a real Pebble.

`roost up` with ROOST_ACME_DIRECTORY pointing at Pebble, whose HTTP-01
validations go to the platform's router port and whose DNS (challtestsrv)
sends every name to 127.0.0.1. `roost domains add` is all a user does: the
lease holder orders, the routers answer, the router serves the certificate
by SNI, and renews it (Pebble's certificates here live half a minute, so
the renewal point, a third of the lifetime before expiry, comes 20 s in). A
domain the CA cannot reach (its DNS says 127.0.0.2, where nothing listens)
is reported failing with the reason, and retried with a doubling backoff.
"""

from __future__ import annotations

import itertools
import json
import socket
import ssl
import time
from typing import Any

import pytest
from cryptography import x509

from tests.conftest import free_port, wait_until
from tests.e2e.platform import Platform, running_platform
from tests.pebble import running_pebble

pytestmark = pytest.mark.e2e

# Short enough that the renewal comes soon (a minute once: 20 s more of the
# test), long enough to see the first certificate served before it expires.
VALIDITY_S = 30
RETRY_S = 2.0


def certs(p: Platform) -> dict[str, dict[str, Any]]:
    return {r["hostname"]: r for r in json.loads(p.roost("certs", "--json").stdout)}


def served_certificate(port: int, hostname: str, root_pem: str) -> x509.Certificate:
    """The leaf the router serves for `hostname`, verified up to Pebble's root."""
    ctx = ssl.create_default_context(cadata=root_pem)
    with (
        socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
        ctx.wrap_socket(raw, server_hostname=hostname) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der)


def test_domains_get_certificates_renewed_and_failures_say_why() -> None:
    router_port = free_port()
    with running_pebble(router_port, validity_s=VALIDITY_S) as pebble:
        pebble.set_a("refused.test", "127.0.0.2")
        env = {
            "ROOST_ACME_DIRECTORY": pebble.directory,
            "ROOST_ACME_CA_BUNDLE": str(pebble.ca_bundle),
            "ROOST_ACME_EMAIL": "ops@example.com",
            "ROOST_ACME_RETRY_S": str(RETRY_S),
            # Two workers on the port, each with its own table: the CA's
            # connection may land on either, and both must answer.
            "ROOST_ROUTER_WORKERS": "2",
        }
        with running_platform(env, router_port=router_port) as p:
            p.roost("apps", "create", "shop")
            p.roost("domains", "add", "shop.test", "--app", "shop")
            p.roost("domains", "add", "refused.test", "--app", "shop")

            # Every look at the certificates also notes refused.test's
            # failures: failure n came after the look before the one that
            # first saw n began, so its retry is planned at least its backoff
            # after that (judged on the looks' own times: a look under load
            # can come after that retry was due).
            looks: list[float] = []
            seen: dict[int, tuple[float, float]] = {}  # failures -> (next_at, look before)

            def look() -> dict[str, dict[str, Any]]:
                began = time.time()
                rows = certs(p)
                n = rows["refused.test"]["failures"]
                if n and n not in seen and looks:
                    seen[n] = (rows["refused.test"]["next_at"], looks[-1])
                looks.append(began)
                return rows

            row = wait_until(
                lambda: (r := look()["shop.test"])["state"] == "valid" and r,
                180,
                "a certificate for shop.test",
            )
            assert isinstance(row, dict)
            assert row["source"] == "acme" and row["reason"] == ""
            root = pebble.root_pem()
            first = wait_until(
                lambda: served_certificate(p.tls_port, "shop.test", root),
                60,
                "the router serving shop.test's certificate",
            )
            assert isinstance(first, x509.Certificate)
            names = first.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            assert names.value.get_values_for_type(x509.DNSName) == ["shop.test"]
            lifetime = first.not_valid_after_utc - first.not_valid_before_utc
            assert lifetime.total_seconds() <= VALIDITY_S + 1  # Pebble's short-lived ones

            # Renewed before it expires, and the router serves the new one.
            renewed = wait_until(
                lambda: (
                    (c := served_certificate(p.tls_port, "shop.test", root)).serial_number
                    != first.serial_number
                    and c
                ),
                VALIDITY_S * 2 + 60,
                "the renewed certificate served",
            )
            assert isinstance(renewed, x509.Certificate)
            assert renewed.not_valid_after_utc > first.not_valid_after_utc
            assert look()["shop.test"]["state"] == "valid"

            # The unreachable domain: failing, why, and retried later each time.
            wait_until(
                lambda: look()["refused.test"]["failures"] >= 3,
                120,
                "three failed orders for refused.test",
            )
            r = look()["refused.test"]
            assert (r["source"], r["state"], r["reason"]) == ("acme", "failing", "refused")
            assert "refused" in r["detail"]
            assert seen, "no failure of refused.test seen come after a look"
            for n, (next_at, before) in seen.items():
                # (less a second: the controller reads its clock just before it commits)
                assert next_at >= before + RETRY_S * 2 ** (n - 1) - 1.0, (n, seen)
            # The n-th retry waits RETRY_S * 2**(n-1) after the n-th failure,
            # which came after the previous retry's time: the gaps double.
            waits = sorted((n, at) for n, (at, _) in seen.items())
            for (_, at), (m, later) in itertools.pairwise(waits):
                assert later - at >= RETRY_S * 2 ** (m - 1), waits
            # And shop.test was never disturbed by its neighbour's failures.
            assert look()["shop.test"]["state"] == "valid"
