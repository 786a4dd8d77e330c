"""Alerts' pure parts: URLs, signatures, backoff (a fake clock), watches."""

from __future__ import annotations

import itertools
import json

import pytest

from roost.controller import notify
from roost.controller.notify import Alert, BadTarget, after_try, backoff, parse_target
from roost.controller.notifywatch import DiskWatch, InstanceWatch
from roost.wire.messages import InstanceStatus


def test_github_s_documented_signature() -> None:
    # The example in GitHub's "Validating webhook deliveries".
    got = notify.signature("It's a Secret to Everybody", b"Hello, World!")
    assert got == "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/roost?x=1",
        "http://127.0.0.1:9/unreachable",  # unreachable is accepted, shown failing later
        "mailto:ops@example.com,dev@example.org",
        "smtp://user:p%40ss@mail.example.com:2525/ops@example.com?from=roost@example.com",
        "smtps://mail.example.com/ops@example.com",
    ],
)
def test_well_formed_targets_are_taken(url: str) -> None:
    parse_target(url)


@pytest.mark.parametrize(
    "url",
    [
        "",
        "hooks.example.com/x",
        "ftp://example.com/x",
        "https:///nohost",
        "http://example.com:99999/",
        "https://exa mple.com/",
        "mailto:",
        "mailto:not-an-address",
        "smtp://mail.example.com/",
        "smtp://mail.example.com/ops@example.com?from=nobody",
        "javascript:alert(1)",
    ],
)
def test_malformed_targets_are_refused(url: str) -> None:
    with pytest.raises(BadTarget):
        parse_target(url)


def test_smtp_target_parts() -> None:
    t = parse_target("smtp://me:p%40ss@mail.example.com:2525/a@x.org,b@y.org?starttls=1")
    assert t.kind == "email" and t.to == ("a@x.org", "b@y.org")
    assert t.server is not None
    assert (t.server.host, t.server.port, t.server.starttls, t.server.tls) == (
        "mail.example.com", 2525, True, False,
    )  # fmt: skip
    assert (t.server.user, t.server.password) == ("me", "p@ss")
    assert parse_target("mailto:a@x.org").server is None  # the platform's server


def test_passwords_are_never_shown() -> None:
    assert notify.redact("smtp://me:secret@mail.example.com/a@x.org") == (
        "smtp://me:***@mail.example.com/a@x.org"
    )
    assert notify.redact("https://example.com/hook") == "https://example.com/hook"


def test_backoff_doubles_up_to_the_cap() -> None:
    assert [backoff(n, 10) for n in range(1, 6)] == [10, 20, 40, 80, 160]
    assert backoff(30, 10) == notify.BACKOFF_CAP_S
    assert backoff(1, 10, jitter=0.999) < 12.5  # at most a quarter more


def test_a_failing_delivery_is_retried_with_backoff_then_given_up() -> None:
    now = 1000.0  # the fake clock
    attempts, tries_at = 0, []
    state = "pending"
    while state == "pending":
        tries_at.append(now)
        out = after_try(attempts, "connection refused", now, base_s=10)
        attempts, state = out.attempts, out.state
        assert out.last_error == "connection refused"
        now = out.next_at
    assert state == "failed" and attempts == notify.MAX_ATTEMPTS
    gaps = [b - a for a, b in itertools.pairwise(tries_at)]
    assert gaps == [10 * 2**n for n in range(notify.MAX_ATTEMPTS - 1)]


def test_a_delivery_that_gets_through_is_done() -> None:
    out = after_try(3, "", 50.0, base_s=10)
    assert (out.state, out.attempts, out.last_error) == ("delivered", 4, "")


def test_payload_and_headers() -> None:
    alert = Alert(7, "deploy-failed", "shop", "v3 crashed", 1.5, {"version": 3})
    body = notify.payload(alert, 42)
    sent = json.loads(body)
    assert sent["event"] == "deploy-failed" and sent["app"] == "shop"
    assert sent["delivery_id"] == 42 and sent["fields"] == {"version": 3}
    heads = notify.headers(alert, 42, body, "s3cret")
    assert heads["X-Hub-Signature-256"] == notify.signature("s3cret", body)
    assert heads["X-Roost-Delivery"] == "42" and heads["X-Roost-Event"] == "deploy-failed"
    assert notify.SIGNATURE_HEADER not in notify.headers(alert, 42, body, "")


def test_email_text() -> None:
    alert = Alert(1, "host-down", "", "host h1 is down", 1.0, {"host": "h1"})
    msg = notify.email(alert, "roost@example.com", ("ops@example.com",))
    assert msg["Subject"] == "[roost] host-down: host h1 is down"
    assert "host: h1" in msg.get_content()


def test_backup_reports_are_told_apart() -> None:
    assert notify.backup_kind("b-12: drill: the dump did not restore") == "drill-failed"
    assert notify.backup_kind("pg_dump failed: connection refused") == "backup-failed"


def _st(iid: str, state: str, restarts: int, error: str = "") -> InstanceStatus:
    return InstanceStatus(
        instance_id=iid, app="shop", release=2, process_type="web", state=state,  # type: ignore[arg-type]
        restarts=restarts, last_error=error,
    )  # fmt: skip


def test_instance_watch_raises_each_incident_once() -> None:
    w = InstanceWatch()
    oom = "ran out of memory (limit 64 MB): killed by the kernel"
    sts = {"i1": _st("i1", "backoff", 0, oom), "i2": _st("i2", "up", 1)}
    assert [r.kind for r in w.look(sts, ["i1", "i2"])] == ["instance-oom"]
    assert w.look(sts, ["i1"]) == []  # the same incident, reported again
    sts["i1"] = _st("i1", "backoff", 4, "exited with 1\nValueError: boom")
    loop = w.look(sts, ["i1"])
    assert [r.kind for r in loop] == ["instance-crash-loop"]
    assert "crashed 5 times: ValueError: boom" in loop[0].message
    assert loop[0].fields["instance"] == "i1"
    assert w.look(sts, ["i1"]) == []
    del sts["i1"]
    assert w.look(sts, ["i1"]) == []  # gone: forgotten
    sts["i1"] = _st("i1", "backoff", 4, oom)
    assert {r.kind for r in w.look(sts, ["i1"])} == {"instance-oom", "instance-crash-loop"}


def test_disk_watch_raises_once_per_fall() -> None:
    w = DiskWatch()
    gib = 2**30
    assert w.look("sh1", 50 * gib, 100 * gib, 0.25) == []
    (r,) = w.look("sh1", 20 * gib, 100 * gib, 0.25)
    assert r.kind == "disk-nearly-full" and r.fields["host"] == "sh1"
    assert w.look("sh1", 19 * gib, 100 * gib, 0.25) == []
    assert w.look("sh1", 27 * gib, 100 * gib, 0.25) == []  # within the hysteresis
    assert w.look("sh1", 22 * gib, 100 * gib, 0.25) == []  # never came back: still the same
    assert w.look("sh1", 31 * gib, 100 * gib, 0.25) == []  # back above
    assert len(w.look("sh1", 10 * gib, 100 * gib, 0.25)) == 1
    assert w.look("sh2", 0, 0, 0.25) == []  # nothing known


@pytest.mark.parametrize(
    ("address", "private"),
    [
        ("127.0.0.1", True),
        ("10.1.2.3", True),
        ("192.168.0.5", True),
        ("169.254.169.254", True),  # cloud metadata
        ("0.0.0.0", True),
        ("::1", True),
        ("fe80::1%eth0", True),
        ("::ffff:10.0.0.1", True),
        ("fd00::5", True),
        ("224.0.0.1", True),
        ("8.8.8.8", False),
        ("2606:4700:4700::1111", False),
        ("hooks.example.com", False),  # a name: judged by what it resolves to
    ],
)
def test_private_addresses(address: str, private: bool) -> None:
    assert notify.private_address(address) is private


def test_a_refused_target_is_not_tried_again() -> None:
    assert notify.refusal("hooks.example.com", ["93.184.215.14"]) == ""
    why = notify.refusal("internal.example.com", ["93.184.215.14", "10.0.0.8"])
    assert "10.0.0.8" in why
    out = after_try(0, why, 10.0, base_s=10, final=True)
    assert (out.state, out.attempts) == ("failed", 1)
