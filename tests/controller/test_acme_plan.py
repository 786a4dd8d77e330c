"""ACME decisions with a fake clock: what is due, renewal points, backoff, reasons;
and the settings refused at start."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from roost.controller import acme_plan as ap
from roost.controller.acme import router_addresses, settings_problem
from roost.controller.acme_plan import DAY, FAILING, PENDING, VALID, Order
from roost.settings import Settings

T0 = 1_800_000_000.0


def test_a_new_domain_without_a_certificate_is_ordered_at_once() -> None:
    p = ap.plan(T0, {"shop.example.com": 1}, [], [])
    assert [o.hostname for o in p.new] == ["shop.example.com"]
    assert p.new[0].state == PENDING and p.new[0].next_at == T0
    assert [o.hostname for o in p.start] == ["shop.example.com"]
    assert p.gone == ()


def test_uploaded_certificates_and_wildcards_are_left_to_their_owner() -> None:
    p = ap.plan(T0, {"own.example.com": 1, "*.example.org": 1}, [], ["own.example.com"])
    assert p.new == () and p.start == ()


def test_a_domain_in_flight_is_never_started_twice() -> None:
    o = Order("a.example.com", 1, PENDING, next_at=T0 - 5)
    p = ap.plan(T0, {"a.example.com": 1}, [o], [], running=["a.example.com"])
    assert p.start == ()
    assert ap.plan(T0, {"a.example.com": 1}, [o], []).start == (o,)


def test_rows_of_removed_or_moved_domains_go_and_a_moved_one_starts_afresh() -> None:
    gone = Order("old.example.com", 1, VALID, next_at=T0 + DAY)
    moved = Order("moved.example.com", 1, FAILING, next_at=T0 + DAY, failures=3)
    p = ap.plan(T0, {"moved.example.com": 2}, [gone, moved], [])
    assert p.gone == ("moved.example.com", "old.example.com")
    assert [(o.hostname, o.app_id, o.failures) for o in p.new] == [("moved.example.com", 2, 0)]
    assert [o.app_id for o in p.start] == [2]


def test_renewal_thirty_days_before_expiry_or_a_third_of_a_short_lifetime() -> None:
    assert ap.renew_at(T0, T0 + 90 * DAY) == T0 + 60 * DAY
    assert ap.renew_at(T0, T0 + 365 * DAY) == T0 + 335 * DAY
    # A 6-day certificate is renewed with 2 days left, not every pass.
    assert ap.renew_at(T0, T0 + 6 * DAY) == T0 + 4 * DAY
    assert ap.renew_at(T0, T0 + 90 * DAY, renew_before=10 * DAY) == T0 + 80 * DAY


def test_a_valid_certificate_is_due_only_at_its_renewal_point() -> None:
    o = ap.succeeded(Order("a.example.com", 1, FAILING, T0, "dns", "x", 4), T0, T0, T0 + 90 * DAY)
    assert (o.state, o.reason, o.detail, o.failures) == (VALID, "", "", 0)
    domains = {"a.example.com": 1}
    certified = ["a.example.com"]
    assert ap.plan(T0 + 59 * DAY, domains, [o], certified).start == ()
    assert ap.plan(T0 + 60 * DAY, domains, [o], certified).start == (o,)


def test_failures_back_off_doubling_up_to_a_cap_and_keep_the_reason() -> None:
    o = Order("a.example.com", 1, PENDING, T0)
    waits = []
    now = T0
    for _ in range(10):
        o = ap.failed(o, now, "refused", "connect: connection refused", first=60, cap=3600)
        waits.append(o.next_at - now)
        now = o.next_at
    assert waits == [60, 120, 240, 480, 960, 1920, 3600, 3600, 3600, 3600]
    assert (o.state, o.reason, o.failures) == (FAILING, "refused", 10)
    domains = {"a.example.com": 1}
    assert ap.plan(o.next_at - 1, domains, [o], []).start == ()
    assert ap.plan(o.next_at, domains, [o], []).start == (o,)
    # A success resets the count: the next failure waits the first step again.
    ok = ap.succeeded(o, now, now, now + 90 * DAY)
    assert ap.failed(ok, now, "dns", "").next_at == now + ap.RETRY_FIRST_S


def test_an_unknown_reason_is_recorded_as_error_and_details_are_bounded() -> None:
    o = ap.failed(Order("a.example.com", 1, PENDING, T0), T0, "gremlins", "x" * 5000)
    assert o.reason == "error" and len(o.detail) == 2000


def test_forced_renewal_is_due_now() -> None:
    o = Order("a.example.com", 1, VALID, next_at=T0 + 50 * DAY)
    assert ap.forced(o, T0).next_at == T0
    assert ap.plan(T0, {"a.example.com": 1}, [ap.forced(o, T0)], ["a.example.com"]).start


def test_reasons_from_ca_problems() -> None:
    conn = "urn:ietf:params:acme:error:connection"
    cases = {
        ("urn:ietf:params:acme:error:dns", "DNS problem: NXDOMAIN looking up A"): "dns",
        (conn, 'Get "http://x/": could not resolve URL "http://x/"'): "dns",
        (conn, 'Get "http://x/": dial tcp 127.0.0.2:5002: connect: connection refused'): "refused",
        (conn, "Fetching http://x/: Timeout during connect (likely firewall problem)"): "timeout",
        (conn, "context deadline exceeded"): "timeout",
        (conn, "Fetching http://x/: Error getting validation data"): "connection",
        ("urn:ietf:params:acme:error:unauthorized", "The key authorization file"): "unauthorized",
        ("urn:ietf:params:acme:error:rejectedIdentifier", "blocked"): "rejected",
        ("urn:ietf:params:acme:error:caa", "CAA record forbids"): "rejected",
        ("urn:ietf:params:acme:error:rateLimited", "too many"): "rate-limited",
        ("urn:ietf:params:acme:error:serverInternal", "oops"): "error",
    }
    for (typ, detail), want in cases.items():
        assert ap.classify(typ, detail) == want, (typ, detail)
    assert set(cases.values()) <= set(ap.REASONS)


def test_settings_that_cannot_work_are_refused(tmp_path: Path) -> None:
    ok = Settings(acme_directory="https://acme.example/dir", acme_email="ops@example.com")
    assert settings_problem(ok) is None
    assert settings_problem(Settings()) is None  # off
    bundle = tmp_path / "ca.pem"
    bundle.write_text("x")
    assert settings_problem(replace(ok, acme_ca_bundle=str(bundle))) is None
    bad = {
        "acme_directory": "http://acme.example/dir",  # RFC 8555: HTTPS only
        "acme_email": "not an address",
        "acme_ca_bundle": str(tmp_path / "missing.pem"),
        "acme_routers": "127.0.0.1",
        "acme_retry_s": 0.0,
    }
    for field, value in bad.items():
        problem = settings_problem(replace(ok, **{field: value}))
        assert problem is not None, field
    assert router_addresses(replace(ok, bind_host="0.0.0.0", router_port=81)) == ["127.0.0.1:81"]
    assert router_addresses(replace(ok, acme_routers="10.0.0.1:80, 10.0.0.2:80")) == [
        "10.0.0.1:80",
        "10.0.0.2:80",
    ]
