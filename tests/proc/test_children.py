"""Supervision decisions (roost.proc.children) as data, with a fake clock."""

from __future__ import annotations

from roost.proc import children as C
from roost.proc.backoff import Backoff
from roost.proc.exits import ExitCode

POLICY = C.Policy(
    backoff=Backoff(base_s=1.0, max_s=8.0, reset_after_s=60.0),
    ready_timeout_s=5.0,
    stop_grace_s=3.0,
)


def kids(*cs: C.Child) -> dict[str, C.Child]:
    return {c.name: c for c in cs}


def running(name: str, order: int, now: float = 0.0, probed: bool = False) -> C.Child:
    return C.started(C.Child(name, order, POLICY, probed=probed), pid=100 + order, now=now)


def test_new_children_start_and_are_up_without_a_probe() -> None:
    a, b = C.Child("a", 1, POLICY), C.Child("b", 2, POLICY, probed=True)
    assert C.plan(kids(a, b), 0.0, stopping_all=False) == [C.Start("a"), C.Start("b")]
    assert C.started(a, 7, 1.0).state == "up"
    s = C.started(b, 8, 1.0)
    assert (s.state, s.deadline) == ("starting", 6.0)
    assert C.ready(s, 8, 2.0).state == "up"
    assert C.ready(s, 9, 2.0) is s  # an answer about another process


def test_crashes_back_off_exponentially_and_a_long_run_resets() -> None:
    c = running("a", 1)
    delays = []
    now = 0.0
    for _ in range(5):
        c = C.exited(c, c.pid, 1, ["Traceback", "boom"], now)
        assert c.state == "backoff" and c.last_error == "exited with status 1\nTraceback\nboom"
        delays.append(c.next_start_at - now)
        assert C.plan(kids(c), c.next_start_at - 0.01, False) == []
        assert C.next_deadline(kids(c)) == c.next_start_at
        now = c.next_start_at
        assert C.plan(kids(c), now, False) == [C.Start("a")]
        c = C.started(c, 200, now)
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0] and c.restarts == 5
    c = C.exited(c, 200, 1, [], now + 60.0)  # it ran a minute: a fresh failure
    assert c.failures == 1 and c.next_start_at == now + 61.0


def test_a_fatal_status_is_final_and_stops_everyone_in_reverse_order() -> None:
    a, b, c = running("a", 1), running("b", 2), running("c", 3)
    b = C.exited(b, b.pid, ExitCode.CONFIG_ERROR, ["b: data dir unreachable (chmod o+x /x)"], 5.0)
    assert b.state == "failed" and "chmod o+x /x" in b.last_error
    world = kids(a, b, c)
    assert C.fatal(world) == b
    assert C.plan(world, 5.0, False, in_order=True) == [C.Terminate("c")]
    assert C.plan(world, 5.0, False) == [C.Terminate("c"), C.Terminate("a")]
    world["c"] = C.stopping(c, 5.0)
    assert C.plan(world, 6.0, False, in_order=True) == []  # c has its grace
    assert C.plan(world, 8.0, False, in_order=True) == [C.Kill("c")]
    # A later configuration error does not replace the one that ended it all.
    world["a"] = C.exited(a, a.pid, ExitCode.UNAVAILABLE, [], 6.0)
    assert world["a"].state == "failed" and C.fatal(world) == b
    world["a"] = a
    world["c"] = C.exited(C.killed(world["c"]), c.pid, -9, [], 8.5)
    assert world["c"].state == "stopped"
    assert C.plan(world, 8.5, False, in_order=True) == [C.Terminate("a")]


def test_a_hung_start_is_stopped_killed_and_counted_as_a_failure() -> None:
    c = running("a", 1, now=0.0, probed=True)
    assert C.plan(kids(c), 4.9, False) == []
    assert C.plan(kids(c), 5.0, False) == [C.Terminate("a", "did not answer within 5s")]
    c = C.stopping(c, 5.0, "did not answer within 5s")
    assert C.plan(kids(c), 8.0, False) == [C.Kill("a")]
    c = C.exited(C.killed(c), c.pid, -9, [], 8.1)
    assert c.state == "backoff" and c.last_error == "did not answer within 5s"


def test_a_removed_child_is_stopped_then_forgotten() -> None:
    c = running("a", 1)
    gone = C.Child("b", 2, POLICY, state="backoff", wanted=False)
    c = C.Child(**{**c.__dict__, "wanted": False})
    assert C.plan(kids(c, gone), 1.0, False) == [C.Terminate("a"), C.Forget("b")]
    c = C.exited(C.stopping(c, 1.0), c.pid, 0, [], 1.5)
    assert c.state == "stopped"
    assert C.plan(kids(c), 1.5, False) == [C.Forget("a")]


def test_a_child_that_could_not_start_backs_off() -> None:
    c = C.start_failed(C.Child("a", 1, POLICY), "No such file: 'redis-server'", 3.0)
    assert c.state == "backoff" and c.next_start_at == 4.0
    assert c.last_error == "could not start: No such file: 'redis-server'"
    assert C.plan(kids(c), 3.0, stopping_all=True) == []  # stopping: no restarts


def test_a_replaced_child_starts_again_at_once_and_no_failure_is_counted() -> None:
    c = C.exited(running("a", 1), 101, 1, [], 0.0)  # one crash: failures 1
    c = C.started(c, 102, 2.0)
    # Told to go (a reload): its exit starts the successor now, no backoff.
    going = C.replacing(c, 10.0)
    assert going.state == "stopping" and going.restart
    assert C.plan(kids(going), 13.0, False) == [C.Kill("a")]  # the grace still holds
    back = C.exited(going, 102, 0, [], 11.0)
    assert back.state == "pending" and not back.restart and back.pid == 0
    assert (back.restarts, back.failures) == (c.restarts, c.failures)
    assert C.plan(kids(back), 11.0, False) == [C.Start("a")]
    # Overlapping (a router with shared sockets): the successor starts now.
    now = C.replaced(c)
    assert (now.state, now.pid) == ("pending", 0)
    assert C.plan(kids(now), 10.0, False) == [C.Start("a")]
    # A stop of everything during a replacement ends it stopped, not started.
    assert C.plan(kids(back), 11.0, stopping_all=True) == []
