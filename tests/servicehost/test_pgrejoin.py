"""When a pair's standby that cannot stream is made again
(servicehost/pgrejoin.Stuck, pure, with a fake clock)."""

from __future__ import annotations

from roost.servicehost.pgrejoin import Look, Stuck

STUCK = Look(role="replica", state="running", receiving=False, leader_running=True)
STREAMING = Look(role="replica", state="running", receiving=True, leader_running=True)


def test_a_replica_not_streaming_for_a_minute_while_the_leader_runs_is_made_again() -> None:
    s = Stuck(after_s=60, cooldown_s=600)
    assert not s.look(0, STUCK)
    assert not s.look(59, STUCK)
    assert s.look(60, STUCK)
    # Not again at once: the copy takes time; again after the cool-down.
    assert not s.look(200, STUCK)
    assert not s.look(659, STUCK)
    assert s.look(700, STUCK)


def test_streaming_again_or_unknown_resets_or_waits() -> None:
    s = Stuck(after_s=60, cooldown_s=600)
    assert not s.look(0, STUCK)
    assert not s.look(50, STREAMING), "it streams: the count starts again"
    assert not s.look(100, STUCK)
    assert not s.look(150, None), "not asked: nothing decided, nothing reset"
    assert s.look(160, STUCK)


def test_never_a_leader_a_synchronous_standby_a_copy_under_way_or_without_a_leader() -> None:
    for seen in (
        Look(role="master", state="running", receiving=False, leader_running=True),
        Look("replica", "running", False, True, synchronous=True),
        Look(role="replica", state="creating replica", receiving=False, leader_running=True),
        Look(role="uninitialized", state="stopped", receiving=False, leader_running=True),
        Look(role="replica", state="running", receiving=False, leader_running=False),
    ):
        s = Stuck(after_s=60, cooldown_s=600)
        assert not any(s.look(t, seen) for t in range(0, 1000, 5)), seen
