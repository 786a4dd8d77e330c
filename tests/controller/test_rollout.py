from __future__ import annotations

import msgspec

from roost.controller.rollout import decide
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
