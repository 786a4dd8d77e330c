"""The deploy's transition table: every path a deploy can take, and none other."""

from __future__ import annotations

import pytest

from roost.controller.deployflow import (
    BUILD_MOVES,
    FAILURE,
    FINAL,
    Event,
    IllegalMove,
    InLine,
    Move,
    ReleaseState,
    Stage,
    ahead_of,
    build_move,
    cancel_move,
    failure_move,
    next_to_start,
    outcome,
    release_move,
    rollout_end,
    stage_of,
    stalled,
)


def walk(events: list[Event], start: str = "building") -> str:
    status = start
    for e in events:
        move = build_move(status, e)
        assert move.before == status
        status = move.after
    return status


def test_a_deploy_with_services_goes_live() -> None:
    path = [Event.BUILT, Event.PROVISIONED, Event.COPIED, Event.RELEASE_RAN, Event.RELEASED]
    assert walk(path) == "rolling-out"
    assert walk([*path, Event.UP]) == "live"


def test_a_deploy_without_services_skips_provisioning_by_an_event() -> None:
    path = [Event.BUILT, Event.NO_SERVICES, Event.COPIED, Event.NO_RELEASE_COMMAND]
    assert walk(path) == "releasing"
    assert walk([*path, Event.RELEASED]) == "rolling-out"


def test_the_release_phase_comes_between_the_copy_and_the_release() -> None:
    # The predeploy and release commands run once the image is on a second
    # host and before any release exists: no release is made without them.
    assert walk([Event.BUILT, Event.NO_SERVICES, Event.COPIED]) == "release-phase"
    with pytest.raises(IllegalMove, match="'release-phase' cannot take 'released'"):
        build_move("release-phase", Event.RELEASED)
    with pytest.raises(IllegalMove):
        build_move("copying", Event.RELEASE_RAN)
    # A failed release command ends the deploy; nothing was released.
    assert walk([Event.RELEASE_PHASE_FAILED], "release-phase") == "failed"
    assert failure_move("release-phase") == Move("release-phase", "failed")


@pytest.mark.parametrize(
    ("path", "end"),
    [
        ([Event.BUILD_FAILED], "failed"),
        ([Event.BUILT, Event.PROVISION_FAILED], "failed"),
        ([Event.BUILT, Event.NO_SERVICES, Event.COPY_FAILED], "failed"),
        (
            [
                Event.BUILT,
                Event.NO_SERVICES,
                Event.COPIED,
                Event.RELEASE_RAN,
                Event.RELEASED,
                Event.ROLLED_BACK,
            ],
            "rolled-back",
        ),
        (
            [
                Event.BUILT,
                Event.NO_SERVICES,
                Event.COPIED,
                Event.RELEASE_RAN,
                Event.RELEASED,
                Event.ROLLOUT_FAILED,
            ],
            "failed",
        ),
        (
            [
                Event.BUILT,
                Event.NO_SERVICES,
                Event.COPIED,
                Event.RELEASE_RAN,
                Event.RELEASED,
                Event.SUPERSEDED,
            ],
            "failed",
        ),
    ],
)
def test_every_failure_ends_the_deploy(path: list[Event], end: str) -> None:
    assert walk(path) == end
    assert stage_of(end).final


def test_a_final_stage_takes_no_event_but_a_live_deploy_crash_looping() -> None:
    for stage in FINAL:
        for event in Event:
            if (stage, event) == (Stage.LIVE, Event.CRASH_LOOPED):
                # Rolled back by itself in its window: `roost deploys` says so.
                assert build_move("live", event) == Move("live", "rolled-back")
                continue
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


def test_a_queued_deploy_builds_or_is_cancelled() -> None:
    assert walk([Event.STARTED, Event.BUILT], "queued") == "provisioning"
    with pytest.raises(IllegalMove):
        build_move("building", Event.STARTED)  # started once
    # Any stage before the end may be cancelled; an ended deploy may not.
    for stage in Stage:
        if stage.final:
            with pytest.raises(IllegalMove):
                cancel_move(stage.value)
        else:
            assert cancel_move(stage.value) == Move(stage.value, "cancelled")
    assert Stage.CANCELLED.final
    assert release_move("pending", Event.CANCELLED).after == "failed"
    with pytest.raises(IllegalMove):
        release_move("active", Event.CANCELLED)  # live already: not cancelled
    assert outcome("cancelled", "cancelled by ann@example.com", None) == (
        "cancelled by ann@example.com"
    )
    assert outcome("queued", "", None) == "waiting for the app's earlier deploy to end"


def line(*builds: tuple[str, str, float]) -> list[InLine]:
    return [InLine(*b) for b in builds]


def test_deploys_of_one_app_start_in_order() -> None:
    # b1 builds; b2 and b3 wait, each for the one just before it.
    q = line(("b3", "queued", 3.0), ("b1", "building", 1.0), ("b2", "queued", 2.0))
    assert [ahead_of(q, b) for b in ("b1", "b2", "b3")] == [None, "b1", "b2"]
    assert ahead_of(q, "b4") == "b3"  # a new one queues behind the last
    assert next_to_start(q) is None  # b1 is under way
    for stage in ("provisioning", "copying", "rolling-out"):
        assert next_to_start(line(("b1", stage, 1.0), ("b2", "queued", 2.0))) is None
    # b1 ended (any end): the oldest queued one starts, never two.
    for end in ("live", "failed", "rolled-back", "cancelled"):
        assert (
            next_to_start(line(("b1", end, 1.0), ("b3", "queued", 3.0), ("b2", "queued", 2.0)))
            == "b2"
        )
    assert next_to_start(line(("b1", "live", 1.0))) is None
    assert next_to_start([]) is None
    # Created in the same instant: the id decides, the same way every time.
    assert next_to_start(line(("b9", "queued", 5.0), ("b8", "queued", 5.0))) == "b8"


def test_a_deploy_past_its_stages_limit_has_stalled() -> None:
    limits = {Stage.BUILDING: 100.0, Stage.COPYING: 50.0}
    q = [
        InLine("b1", "building", 0.0, since=10.0),  # in its stage since 10
        InLine("b2", "copying", 0.0),  # no stage time recorded: its creation's
        InLine("b3", "queued", 0.0),  # waits as long as it must
        InLine("b4", "rolling-out", 0.0),  # the lease holder ends it
    ]
    assert stalled(q, 50.0, limits) == []
    assert stalled(q, 51.0, limits) == ["b2"]
    assert stalled(q, 111.0, limits) == ["b1", "b2"]
    assert stalled(q, 1e9, {}) == []
