"""The deploy's transition table: every path a deploy can take, and none other."""

from __future__ import annotations

import pytest

from roost.controller.deployflow import (
    BUILD_MOVES,
    FAILURE,
    FINAL,
    Event,
    IllegalMove,
    Move,
    ReleaseState,
    Stage,
    build_move,
    failure_move,
    outcome,
    release_move,
    rollout_end,
    stage_of,
)


def walk(events: list[Event], start: str = "building") -> str:
    status = start
    for e in events:
        move = build_move(status, e)
        assert move.before == status
        status = move.after
    return status


def test_a_deploy_with_services_goes_live() -> None:
    path = [Event.BUILT, Event.PROVISIONED, Event.COPIED, Event.RELEASED, Event.UP]
    assert walk(path) == "live"


def test_a_deploy_without_services_skips_provisioning_by_an_event() -> None:
    assert walk([Event.BUILT, Event.NO_SERVICES, Event.COPIED, Event.RELEASED]) == "rolling-out"


@pytest.mark.parametrize(
    ("path", "end"),
    [
        ([Event.BUILD_FAILED], "failed"),
        ([Event.BUILT, Event.PROVISION_FAILED], "failed"),
        ([Event.BUILT, Event.NO_SERVICES, Event.COPY_FAILED], "failed"),
        (
            [Event.BUILT, Event.NO_SERVICES, Event.COPIED, Event.RELEASED, Event.ROLLED_BACK],
            "rolled-back",
        ),
        (
            [Event.BUILT, Event.NO_SERVICES, Event.COPIED, Event.RELEASED, Event.ROLLOUT_FAILED],
            "failed",
        ),
        (
            [Event.BUILT, Event.NO_SERVICES, Event.COPIED, Event.RELEASED, Event.SUPERSEDED],
            "failed",
        ),
    ],
)
def test_every_failure_ends_the_deploy(path: list[Event], end: str) -> None:
    assert walk(path) == end
    assert stage_of(end).final


def test_a_final_stage_takes_no_event() -> None:
    for stage in FINAL:
        for event in Event:
            with pytest.raises(IllegalMove):
                build_move(stage.value, event)


def test_no_stage_is_skipped() -> None:
    # A result delivered twice, or a rollout verdict for a build still copying,
    # must be refused rather than jump ahead.
    with pytest.raises(IllegalMove, match="'building' cannot take 'released'"):
        build_move("building", Event.RELEASED)
    with pytest.raises(IllegalMove):
        build_move("copying", Event.UP)


def test_every_non_final_stage_has_a_way_out_and_a_way_to_fail() -> None:
    for stage in Stage:
        if stage.final:
            continue
        outs = {after for (s, _), after in BUILD_MOVES.items() if s is stage}
        assert outs - {Stage.FAILED}, stage
        assert Stage.FAILED in outs, stage


def test_statuses_older_versions_wrote_still_read() -> None:
    assert stage_of("deploying") is Stage.ROLLING_OUT
    assert build_move("deploying", Event.UP).after == "live"
    assert stage_of("succeeded") is Stage.LIVE
    with pytest.raises(ValueError):
        stage_of("half-done")


def test_release_states() -> None:
    assert release_move("pending", Event.UP).after == "active"
    assert release_move("active", Event.SUPERSEDED).after == "superseded"
    assert release_move("pending", Event.ROLLED_BACK).after == "failed"
    for state in (ReleaseState.SUPERSEDED, ReleaseState.FAILED):
        for event in Event:
            with pytest.raises(IllegalMove):
                release_move(state.value, event)


def test_rollout_end() -> None:
    assert rollout_end(verdict_failed=False, older_serves=True) is Event.UP
    assert rollout_end(verdict_failed=True, older_serves=True) is Event.ROLLED_BACK
    assert rollout_end(verdict_failed=True, older_serves=False) is Event.ROLLOUT_FAILED


def test_each_stage_fails_by_its_own_event() -> None:
    assert set(FAILURE) == {s for s in Stage if not s.final}
    for stage, event in FAILURE.items():
        assert BUILD_MOVES[(stage, event)] is Stage.FAILED
        assert failure_move(stage.value) == Move(stage.value, "failed")
    assert failure_move("deploying") == Move("deploying", "failed")
    with pytest.raises(IllegalMove):
        failure_move("live")  # an ended deploy cannot fail any more


def test_the_outcome_a_user_reads() -> None:
    assert outcome("live", "", 4) == "v4 is live"
    assert outcome("succeeded", "", 2) == "v2 is live"
    why = "v3 keeps serving; v4 did not start: web.1 crashed 2 times: exit 1"
    assert outcome("rolled-back", why, 4) == f"rolled back: {why}"
    assert outcome("failed", "no builder configured", None) == "failed: no builder configured"
    assert outcome("copying", "", None) == "copying the image to a second host"
