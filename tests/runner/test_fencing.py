"""Which assignments and fenced runs the runner accepts: fences, versions, session ids."""

from __future__ import annotations

from pathlib import Path

from roost.appspec.model import AppSpec
from roost.runner.fencedruns import FencedRuns
from roost.runner.fencing import Held, Verdict, judge, judge_run, pick
from roost.runner.layout import Layout
from roost.runner.rpcserver import RunnerRpc
from roost.sessions.server import ExecSessions
from roost.wire.messages import Assignment, Error, InstanceAssignment, RunStart


def asg(fence: int, version: int, host: str = "h1") -> Assignment:
    return Assignment(host_id=host, fence=fence, version=version)


def test_first_assignment_is_accepted() -> None:
    assert judge(Held(), "h1", asg(1, 1)) is Verdict.ACCEPT
    assert judge(Held(), "h1", asg(0, 0)) is Verdict.ACCEPT


def test_lower_fence_is_refused_whatever_its_version() -> None:
    held = Held(5, 2)
    assert judge(held, "h1", asg(4, 99)) is Verdict.STALE_FENCE


def test_within_a_fence_older_versions_are_ignored_and_repeats_are_same() -> None:
    held = Held(5, 7)
    assert judge(held, "h1", asg(5, 6)) is Verdict.OLD_VERSION
    assert judge(held, "h1", asg(5, 7)) is Verdict.SAME
    assert judge(held, "h1", asg(5, 8)) is Verdict.ACCEPT


def test_higher_fence_wins_even_with_a_lower_version() -> None:
    assert judge(Held(5, 70), "h1", asg(6, 1)) is Verdict.ACCEPT


def test_assignment_for_another_host_is_refused() -> None:
    assert judge(Held(), "h1", asg(9, 9, host="h2")) is Verdict.WRONG_HOST


def test_pick_takes_the_newest_of_several_replies() -> None:
    held, accepted, rejected = pick(Held(5, 1), "h1", [asg(6, 3), asg(4, 10), asg(6, 2)])
    assert held == Held(6, 3)
    assert accepted == asg(6, 3)
    assert rejected == [(asg(4, 10), Verdict.STALE_FENCE)]


def test_pick_with_nothing_new_keeps_what_is_held() -> None:
    held, accepted, rejected = pick(Held(5, 3), "h1", [asg(5, 3), asg(5, 2)])
    assert (held, accepted) == (Held(5, 3), None)
    assert rejected == [(asg(5, 2), Verdict.OLD_VERSION)]


# ---------------------------------------------------------------- fenced runs (cron)


def test_a_fenced_run_older_than_a_seen_token_or_already_run_is_refused() -> None:
    assert judge_run(0, set(), 1, "a") is Verdict.ACCEPT
    assert judge_run(3, set(), 3, "a") is Verdict.ACCEPT
    assert judge_run(3, set(), 2, "a") is Verdict.STALE_FENCE
    assert judge_run(3, {"a"}, 4, "a") is Verdict.ALREADY_RAN


async def test_fenced_runs_survive_a_restart_and_are_bounded(tmp_path: Path) -> None:
    path = tmp_path / "fenced-runs.json"
    runs = FencedRuns(path, keep=3)
    for i, fence in enumerate((2, 5, 4, 5)):
        await runs.record(fence, f"s{i}")
    again = FencedRuns(path, keep=3)
    assert again.judge(4, "new") is Verdict.STALE_FENCE
    assert again.judge(5, "s3") is Verdict.ALREADY_RAN
    assert again.judge(5, "s0") is Verdict.ACCEPT  # the oldest went: bounded
    # An assignment's token fences runs too (the same lease).
    assert again.judge(5, "new", assignment_fence=6) is Verdict.STALE_FENCE


def test_an_unreadable_record_starts_afresh(tmp_path: Path) -> None:
    path = tmp_path / "fenced-runs.json"
    path.write_text("{not json")
    assert FencedRuns(path).judge(1, "s") is Verdict.ACCEPT


async def test_the_runner_refuses_a_deposed_holders_run_before_touching_anything(
    tmp_path: Path,
) -> None:
    sessions = ExecSessions()
    runs = FencedRuns(tmp_path / "fenced-runs.json")
    await runs.record(7, "done")
    # No image provider: a refused run must not get as far as fetching one.
    rpc = RunnerRpc(
        Layout(tmp_path),
        images=None,  # type: ignore[arg-type]
        sessions=sessions,
        fenced=runs,
    )
    a = InstanceAssignment(
        instance_id="i",
        app="a",
        release=1,
        image_digest="sha256:0",
        process_type="cron",
        spec=AppSpec(),
    )
    for msg in (
        RunStart(session="late", assignment=a, command="true", fence=6),
        RunStart(session="done", assignment=a, command="true", fence=7),
    ):
        reply = await rpc.start(msg)
        assert isinstance(reply, Error) and "refused" in reply.message
    assert not sessions.sessions
