"""The supervisor's decisions, pure, with a fake clock."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from roost.appspec.model import AppSpec, ProcessSpec
from roost.runner import plan as P
from roost.runner.model import (
    Fetch,
    Forget,
    ImageStatus,
    Kill,
    MarkUp,
    Policy,
    Record,
    Start,
    Starts,
    Stop,
)
from tests.runner.helpers import DIGEST_A, DIGEST_B, assignment, command_spec

POLICY = Policy(
    backoff_base_s=0.5,
    backoff_max_s=8.0,
    backoff_reset_s=30.0,
    settle_s=1.0,
    startup_timeout_s=60.0,
    stop_grace_s=10.0,
)
READY = {DIGEST_A: ImageStatus(state="ready", path=Path("/img/a"))}


def desired_of(*assignments):  # type: ignore[no-untyped-def]
    return {a.instance_id: a for a in assignments}


def records_of(*records: Record) -> dict[str, Record]:
    return {r.instance_id: r for r in records}


def running(rec: Record, now: float, pid: int = 100) -> Record:
    return P.started(
        rec, pid=pid, now=now, wall=1e9 + now, command="cmd", port=5000, unix_socket=""
    )


def test_backoff_grows_exponentially_and_is_capped() -> None:
    delays = [P.backoff_delay(n, POLICY) for n in range(0, 8)]
    assert delays == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert P.backoff_delay(10_000, POLICY) == 8.0


def test_admit_gives_stable_lowest_free_indexes() -> None:
    a1, a2, w1 = assignment("i1"), assignment("i2"), assignment("w1", process_type="worker")
    new = P.admit([a1, a2, w1], {})
    assert [(r.instance_id, r.process_name, r.state) for r in new] == [
        ("i1", "web.1", "pending"),
        ("i2", "web.2", "pending"),
        ("w1", "worker.1", "pending"),
    ]
    # i1 goes away, i3 arrives: i2 keeps "web.2", i3 takes the freed "web.1".
    records = records_of(new[1], new[2])
    (r3,) = P.admit([a2, assignment("i3"), w1], records)
    assert (r3.instance_id, r3.process_name) == ("i3", "web.1")
    # Another app numbers its own processes.
    (other,) = P.admit([assignment("o1", app="other")], records)
    assert other.process_name == "web.1"


def test_missing_image_is_fetched_once_then_started() -> None:
    a1, a2 = assignment("i1"), assignment("i2")
    recs = records_of(*P.admit([a1, a2], {}))
    assert P.plan(desired_of(a1, a2), recs, {}, 0.0, POLICY) == [Fetch(DIGEST_A, "demo")]
    fetching = {DIGEST_A: P.image_fetching(None)}
    assert P.plan(desired_of(a1, a2), recs, fetching, 0.0, POLICY) == []
    assert P.plan(desired_of(a1, a2), recs, READY, 0.0, POLICY) == [Start("i1"), Start("i2")]


def test_failed_image_fetch_is_retried_with_backoff() -> None:
    a1 = assignment("i1")
    recs = records_of(*P.admit([a1], {}))
    failed = P.image_failed(P.image_fetching(None), "unreachable", now=10.0, policy=POLICY)
    assert failed.retry_at == 10.5
    assert P.plan(desired_of(a1), recs, {DIGEST_A: failed}, 10.4, POLICY) == []
    assert P.plan(desired_of(a1), recs, {DIGEST_A: failed}, 10.5, POLICY) == [
        Fetch(DIGEST_A, "demo")
    ]
    again = P.image_failed(P.image_fetching(failed), "unreachable", now=11.0, policy=POLICY)
    assert again.failures == 2 and again.retry_at == 12.0
    assert P.next_deadline(recs, {DIGEST_A: again}, POLICY) == 12.0


def test_non_web_instance_is_up_after_settling() -> None:
    a = assignment("w", process_type="worker", spec=command_spec("run", web=False, name="worker"))
    rec = running(P.admit([a], {})[0], now=100.0)
    assert rec.state == "starting" and rec.runs == 1 and rec.restarts == 0
    assert P.plan(desired_of(a), records_of(rec), READY, 100.9, POLICY) == []
    assert P.next_deadline(records_of(rec), {}, POLICY) == 101.0
    assert P.plan(desired_of(a), records_of(rec), READY, 101.0, POLICY) == [MarkUp("w")]
    assert P.marked_up(rec, 101.0).state == "up"


def test_web_instance_is_up_only_when_the_probe_answers() -> None:
    a = assignment("i1")
    rec = running(P.admit([a], {})[0], now=0.0, pid=42)
    assert P.plan(desired_of(a), records_of(rec), READY, 59.0, POLICY) == []
    assert P.on_ready(rec, 41, 5.0).state == "starting"  # a stale probe of an old process
    up = P.on_ready(rec, 42, 5.0)
    assert up.state == "up" and up.up_at == 5.0
    assert P.plan(desired_of(a), records_of(up), READY, 500.0, POLICY) == []


def test_web_instance_that_never_answers_is_failed_as_a_crash() -> None:
    a = assignment("i1")
    rec = running(P.admit([a], {})[0], now=0.0, pid=42)
    (action,) = P.plan(desired_of(a), records_of(rec), READY, 60.0, POLICY)
    assert isinstance(action, Stop) and action.instance_id == "i1"
    assert "did not answer HTTP on port 5000 within 60s" in action.failure
    stopping = P.stopping(rec, 60.0, POLICY, action.failure)
    assert stopping.kill_at == 70.0
    assert P.plan(desired_of(a), records_of(stopping), READY, 69.0, POLICY) == []
    assert P.plan(desired_of(a), records_of(stopping), READY, 70.0, POLICY) == [Kill("i1")]
    killed = P.killed(stopping)
    assert P.plan(desired_of(a), records_of(killed), READY, 75.0, POLICY) == []
    crashed = P.on_exit(
        killed, pid=42, returncode=-9, output_tail=["booting"], now=71.0, policy=POLICY
    )
    assert crashed.state == "crashed" and crashed.failures == 1
    assert crashed.last_error.startswith("did not answer HTTP")
    assert crashed.last_error.endswith("booting")


def test_crash_before_up_then_restart_with_growing_backoff() -> None:
    a = assignment("i1")
    rec = P.admit([a], {})[0]
    now = 0.0
    delays = []
    for n in range(1, 6):
        rec = running(rec, now, pid=100 + n)
        assert rec.runs == n and rec.restarts == n - 1
        now += 0.2
        rec = P.on_exit(
            rec,
            pid=100 + n,
            returncode=3,
            output_tail=["Traceback", "Boom"],
            now=now,
            policy=POLICY,
        )
        assert rec.state == "crashed" and rec.pid == 0
        assert rec.last_error == "exited with code 3\nTraceback\nBoom"
        delays.append(rec.next_start_at - now)
        assert P.plan(desired_of(a), records_of(rec), READY, rec.next_start_at - 0.01, POLICY) == []
        assert P.next_deadline(records_of(rec), READY, POLICY) == rec.next_start_at
        now = rec.next_start_at
        assert P.plan(desired_of(a), records_of(rec), READY, now, POLICY) == [Start("i1")]
    assert delays == pytest.approx([0.5, 1.0, 2.0, 4.0, 8.0])


def test_backoff_resets_after_staying_up_a_while() -> None:
    a = assignment("i1")
    rec = replace(P.admit([a], {})[0], failures=4)
    rec = P.on_ready(running(rec, 0.0, pid=7), 7, 1.0)
    # Crash after a short uptime: still counts towards the backoff.
    short = P.on_exit(rec, pid=7, returncode=1, output_tail=[], now=10.0, policy=POLICY)
    assert short.state == "backoff" and short.failures == 5
    assert short.next_start_at == 10.0 + 8.0
    # Crash after staying up past backoff_reset_s: a fresh failure.
    long = P.on_exit(rec, pid=7, returncode=-15, output_tail=[], now=31.0, policy=POLICY)
    assert long.failures == 1 and long.next_start_at == 31.5
    assert long.last_error == "killed by SIGTERM"


def test_exit_reports_of_an_older_process_are_ignored() -> None:
    rec = running(P.admit([assignment("i1")], {})[0], 0.0, pid=9)
    assert P.on_exit(rec, pid=8, returncode=1, output_tail=[], now=1.0, policy=POLICY) == rec


def test_requested_stop_ends_stopped_not_crashed() -> None:
    a = assignment("i1")
    rec = P.marked_up(running(P.admit([a], {})[0], 0.0, pid=5), 1.0)
    (stop,) = P.plan({}, records_of(rec), READY, 2.0, POLICY)
    assert stop == Stop("i1", reason="no longer assigned")
    stopping = P.stopping(rec, 2.0, POLICY)
    done = P.on_exit(stopping, pid=5, returncode=0, output_tail=[], now=3.0, policy=POLICY)
    assert done.state == "stopped" and done.failures == 0 and done.last_error == ""
    assert P.plan({}, records_of(done), READY, 3.0, POLICY) == [Forget("i1")]


def test_undesired_records_without_process_are_forgotten_at_once() -> None:
    recs = records_of(*P.admit([assignment("p"), assignment("c")], {}))
    recs["c"] = P.on_exit(
        running(recs["c"], 0.0, 3), pid=3, returncode=1, output_tail=[], now=1.0, policy=POLICY
    )
    assert recs["c"].state == "crashed"
    assert sorted(P.plan({}, recs, READY, 1.0, POLICY), key=str) == [Forget("c"), Forget("p")]


def test_changed_assignment_restarts_the_instance() -> None:
    old = assignment("i1", env={"A": "1"})
    new = assignment("i1", env={"A": "2"})
    rec = P.marked_up(running(P.admit([old], {})[0], 0.0, pid=5), 1.0)
    assert P.plan(desired_of(new), records_of(rec), READY, 2.0, POLICY) == [
        Stop("i1", reason="assignment changed")
    ]
    stopped = P.on_exit(
        P.stopping(rec, 2.0, POLICY), pid=5, returncode=0, output_tail=[], now=3.0, policy=POLICY
    )
    assert P.plan(desired_of(new), records_of(stopped), READY, 3.0, POLICY) == [Forget("i1")]
    (fresh,) = P.admit([new], {})
    assert fresh.assignment == new


def test_stop_escalates_to_kill_once_after_grace() -> None:
    rec = P.stopping(
        P.marked_up(running(P.admit([assignment("i1")], {})[0], 0.0), 1.0), 5.0, POLICY
    )
    assert P.next_deadline(records_of(rec), {}, POLICY) == 15.0
    assert P.plan({}, records_of(rec), READY, 14.9, POLICY) == []
    assert P.plan({}, records_of(rec), READY, 15.0, POLICY) == [Kill("i1")]
    assert P.plan({}, records_of(P.killed(rec)), READY, 16.0, POLICY) == []
    assert P.next_deadline(records_of(P.killed(rec)), {}, POLICY) is None


def test_the_apps_graceful_timeout_sets_the_kill() -> None:
    web = AppSpec(
        processes={"web": ProcessSpec(name="web", kind="wsgi", entrypoint="a:app", web=True)}
    )
    slow = {"ROOST_GRACEFUL_TIMEOUT": "30"}
    # gunicorn gets the timeout and a margin to end its own workers after it.
    assert P.stop_grace(assignment("w", spec=web, env=slow), POLICY) == 30 + P.ARBITER_MARGIN_S
    assert P.stop_grace(assignment("w", spec=web), POLICY) == 10 + P.ARBITER_MARGIN_S
    assert P.stop_grace(assignment("c", env=slow), POLICY) == 30  # any process of the app
    assert P.stop_grace(assignment("c"), POLICY) == 10
    rec = P.admit([assignment("w", spec=web, env=slow)], {})[0]
    rec = P.stopping(P.marked_up(running(rec, 0.0), 1.0), 5.0, POLICY)
    assert P.plan({}, records_of(rec), READY, 36.9, POLICY) == []
    assert P.plan({}, records_of(rec), READY, 37.0, POLICY) == [Kill("w")]


def test_two_releases_side_by_side_need_both_images() -> None:
    old, new = assignment("old", digest=DIGEST_A), assignment("new", release=2, digest=DIGEST_B)
    recs = records_of(P.marked_up(running(P.admit([old], {})[0], 0.0), 1.0))
    recs.update({r.instance_id: r for r in P.admit([old, new], recs)})
    assert recs["new"].process_name == "web.2"
    assert P.plan(desired_of(old, new), recs, READY, 2.0, POLICY) == [Fetch(DIGEST_B, "demo")]


def test_error_text_is_bounded() -> None:
    text = P.format_error("exited with code 1", ["x" * 3000, "y" * 3000])
    assert len(text) <= P.ERROR_LIMIT + 1 and text.endswith("y" * 3000)
    assert P.describe_exit(None) == "could not be started"
    assert P.describe_exit(-9) == "killed by SIGKILL"


def test_starts_next_to_each_other_are_done_together_in_order() -> None:
    s1, s2, s3 = Start("i1"), Start("i2"), Start("i3")
    actions = [Stop("o1"), s1, s2, Kill("o2"), s3, Fetch(DIGEST_A, "demo")]
    assert P.together(actions) == [
        Stop("o1"), Starts((s1, s2)), Kill("o2"), s3, Fetch(DIGEST_A, "demo")
    ]  # fmt: skip
    assert P.together([]) == [] and P.together([s1]) == [s1]
