from __future__ import annotations

import msgspec

from roost.controller.rollout import WORKER_SETTLE_S, decide, note_up
from roost.wire.messages import InstanceStatus


def _st(iid: str, state: str, restarts: int = 0, err: str = "") -> InstanceStatus:
    return InstanceStatus(
        instance_id=iid,
        app="a",
        release=2,
        process_type="web",
        state=state,
        restarts=restarts,
        last_error=err,  # type: ignore[arg-type]
    )


PLACED = [("i1", "web", 1), ("i2", "web", 2)]


def test_waits_until_every_instance_is_up() -> None:
    d = decide(PLACED, 2, {"i1": _st("i1", "up"), "i2": _st("i2", "starting")}, 0.0, 10.0, 180)
    assert d.verdict == "wait"


def test_promotes_when_all_up() -> None:
    d = decide(PLACED, 2, {"i1": _st("i1", "up"), "i2": _st("i2", "up")}, 0.0, 10.0, 180)
    assert d.verdict == "promote"


def test_not_promoted_while_instances_are_unplaced() -> None:
    d = decide(PLACED[:1], 2, {"i1": _st("i1", "up")}, 0.0, 10.0, 180)
    assert d.verdict == "wait"


def test_crash_loop_fails_with_the_reason() -> None:
    statuses = {
        "i1": _st("i1", "backoff", restarts=2, err="ModuleNotFoundError: No module named 'x'"),
        "i2": _st("i2", "up"),
    }
    d = decide(PLACED, 2, statuses, 0.0, 10.0, 180)
    assert d.verdict == "fail" and "web.1" in d.reason and "ModuleNotFoundError" in d.reason


def test_timeout_fails_naming_the_laggards() -> None:
    d = decide(PLACED, 2, {"i1": _st("i1", "up"), "i2": _st("i2", "starting")}, 0.0, 181.0, 180)
    assert d.verdict == "fail" and "web.2" in d.reason


def test_nothing_to_run_promotes_at_once() -> None:
    assert decide([], 0, {}, 0.0, 0.0, 180).verdict == "promote"


def test_a_failed_health_check_fails_the_release_at_once_with_its_answer() -> None:
    answer = "GET /health answered 500 after 3 attempts (expected 200-399)"
    failed = _st("i2", "crashed", err=answer + "\n[gunicorn] Booting worker")
    statuses = {"i1": _st("i1", "up"), "i2": msgspec.structs.replace(failed, unhealthy=True)}
    d = decide(PLACED, 2, statuses, 0.0, 10.0, 180)
    assert d.verdict == "fail" and d.reason == f"web.2 failed its health check: {answer}"
    # The same first crash of an instance that was not failed by its check waits.
    statuses["i2"] = failed
    assert decide(PLACED, 2, statuses, 0.0, 10.0, 180).verdict == "wait"


def test_a_worker_is_up_only_once_it_has_stayed_up_a_while() -> None:
    """A worker (no port, no socket) is "up" from its start: a memory hog reported up
    before it was killed would be promoted. It counts once seen up WORKER_SETTLE_S on
    the controller's clock with no restart between; a web instance passed its health
    check to be up, so counts at once."""
    placed = [("w1", "worker", 1)]
    settle = WORKER_SETTLE_S
    up = {"w1": _st("w1", "up")}
    seen = note_up({}, placed, up, now=10.0)
    assert seen == {"w1": (0, 10.0)}
    assert decide(placed, 1, up, 0.0, 10.0, 180, up_since=seen, settle_s=settle).verdict == "wait"
    seen = note_up(seen, placed, up, now=10.0 + settle)
    assert decide(placed, 1, up, 0.0, 10.0 + settle, 180, up_since=seen,
                  settle_s=settle).verdict == "promote"  # fmt: skip
    # Restarted meanwhile (a heartbeat saw it up again, one crash more): the wait begins again.
    again = {"w1": _st("w1", "up", restarts=1)}
    seen = note_up(note_up({}, placed, up, 10.0), placed, again, now=12.0)
    assert seen == {"w1": (1, 12.0)}
    assert decide(placed, 1, again, 0.0, 14.0, 180, up_since=seen,
                  settle_s=settle).verdict == "wait"  # fmt: skip
    # Not up: forgotten. A web instance is up as soon as it says so.
    assert note_up(seen, placed, {"w1": _st("w1", "starting")}, 13.0) == {}
    web = {"i1": msgspec.structs.replace(_st("i1", "up"), unix_socket="/run/i1.sock")}
    assert decide([("i1", "web", 1)], 1, web, 0.0, 10.0, 180, up_since={},
                  settle_s=settle).verdict == "promote"  # fmt: skip
