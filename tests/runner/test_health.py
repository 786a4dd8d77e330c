"""Health checks: the decisions (health.py) and the check loop (probe.run_check)
under a fake clock, with knocks that answer from a script; no sockets."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import replace

from roost.appspec.model import AppSpec, HealthCheck, ProcessSpec
from roost.runner import health
from roost.runner import plan as P
from roost.runner.health import DEFAULT, Answer, Check, Progress, judge
from roost.runner.model import Policy
from roost.runner.probe import keep_checking, run_check, status_of
from tests.runner.helpers import assignment

POLICY = Policy(startup_timeout_s=60.0)
DECLARED = Check(
    path="/health",
    status_min=200,
    status_max=399,
    timeout_s=5.0,
    attempts=3,
    initial_delay_s=2.0,
    interval_s=1.0,
    declared=True,
)


def spec_with(check: HealthCheck | None) -> AppSpec:
    web = ProcessSpec(name="web", kind="command", command="serve", web=True)
    return AppSpec(processes={"web": web}, healthchecks={"web": check} if check else {})


def test_without_a_declared_check_any_status_below_500_passes() -> None:
    a = assignment("i1", spec=spec_with(None))
    check = health.check_for(a)
    assert check == health.DEFAULT and check.path == "/"
    assert health.passed(check, Answer(status=200))
    assert health.passed(check, Answer(status=400))  # Django's answer to an unknown Host
    assert health.passed(check, Answer(status=404))
    assert not health.passed(check, Answer(status=500))
    assert not health.passed(check, Answer(status=503))
    assert not health.passed(check, Answer(error="did not answer within 30s"))


def test_a_declared_check_is_carried_from_the_spec_per_process_type() -> None:
    hc = HealthCheck(path="up", timeout=2.0, attempts=4, initial_delay=3.0, interval=0.5)
    a = assignment("i1", spec=spec_with(hc))
    check = health.check_for(a)
    assert check == replace(
        DECLARED, path="/up", timeout_s=2.0, attempts=4, initial_delay_s=3.0, interval_s=0.5
    )
    assert not health.passed(check, Answer(status=404))
    assert health.passed(check, Answer(status=302))
    worker = assignment("i2", spec=spec_with(hc), process_type="worker")
    assert health.check_for(worker) == health.DEFAULT


def test_content_must_be_in_the_body() -> None:
    check = Check(path="/up", status_min=200, status_max=399, content="ok", declared=True)
    assert health.passed(check, Answer(status=200, body=b"all ok"))
    got = Answer(status=200, body=b"starting")
    assert not health.passed(check, got)
    progress = Progress(attempts=check.attempts - 1)
    v = judge(check, progress, got, 0.05)
    assert v.kind == "fail"
    assert (
        v.message
        == "GET /up answered 200 without 'ok' in its body after 3 attempts (expected 200-399)"
    )


def test_judge_counts_answers_and_fails_with_the_last_one() -> None:
    p = Progress()
    v = judge(DECLARED, p, Answer(status=500), 0.05)
    assert (v.kind, v.delay_s, v.progress.attempts) == ("again", 1.0, 1)
    v = judge(DECLARED, v.progress, Answer(error="did not answer within 5s"), 0.05)
    assert (v.kind, v.progress.attempts) == ("again", 2)
    v = judge(DECLARED, v.progress, Answer(status=502), 0.05)
    assert v.kind == "fail"
    assert v.message == "GET /health answered 502 after 3 attempts (expected 200-399)"


def test_refused_connections_are_not_attempts() -> None:
    v = judge(DECLARED, Progress(attempts=2), Answer(error="refused", refused=True), 0.2)
    assert (v.kind, v.delay_s, v.progress.attempts) == ("again", 0.2, 2)
    assert judge(DECLARED, v.progress, Answer(status=204), 0.2).kind == "pass"


def test_the_default_check_message_says_what_was_expected() -> None:
    v = judge(health.DEFAULT, Progress(attempts=2), Answer(status=500), 0.05)
    assert v.kind == "fail"
    assert v.message == "GET / answered 500 after 3 attempts (expected a status below 500)"
    one = Check(path="/slow", attempts=1, declared=True)
    v = judge(one, Progress(), Answer(error="did not answer within 30s"), 0.05)
    assert v.message == "GET /slow did not answer within 30s after 1 attempt (expected 100-499)"


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.knocks: list[float] = []

    async def sleep(self, s: float) -> None:
        self.now += s


def scripted(clock: FakeClock, answers: list[Answer]):  # type: ignore[no-untyped-def]
    it: Iterator[Answer] = iter(answers)

    async def knock(check: Check) -> Answer:
        clock.knocks.append(clock.now)
        return next(it)

    return knock


def test_run_check_waits_the_initial_delay_then_the_interval() -> None:
    clock = FakeClock()
    answers = [Answer(status=500), Answer(status=500), Answer(status=500)]
    failure = asyncio.run(run_check(DECLARED, scripted(clock, answers), clock.sleep))
    assert failure == "GET /health answered 500 after 3 attempts (expected 200-399)"
    assert clock.knocks == [2.0, 3.0, 4.0]


def test_run_check_backs_off_while_nothing_listens_then_passes() -> None:
    clock = FakeClock()
    refused = Answer(error="refused", refused=True)
    answers = [refused] * 6 + [Answer(status=500), Answer(status=200)]
    assert asyncio.run(run_check(DECLARED, scripted(clock, answers), clock.sleep)) == ""
    gaps = [b - a for a, b in zip(clock.knocks, clock.knocks[1:], strict=False)]
    refused_gaps = gaps[:6]
    assert refused_gaps == sorted(refused_gaps) and refused_gaps[0] < 0.1  # growing backoff
    assert refused_gaps[-1] <= 1.0
    assert gaps[6] == 1.0  # after a counted attempt, the check's interval


def test_an_instance_is_seen_soon_after_it_listens_and_a_slow_one_is_not_hammered() -> None:
    """The knock after an instance begins to listen comes within an eighth of
    the time waited (10 ms at least): one listening at 0.16 s was seen at 0.35 s
    by a doubling backoff. Yet an app slow to start gets few knocks."""
    for listens_at in (0.03, 0.16, 0.4, 0.9, 3.0, 20.0):
        clock = FakeClock()

        async def knock(check: Check, clock: FakeClock = clock, at: float = listens_at) -> Answer:
            clock.knocks.append(clock.now)
            if clock.now < at:
                return Answer(error="refused", refused=True)
            return Answer(status=200)

        assert asyncio.run(run_check(DEFAULT, knock, clock.sleep)) == ""
        late = clock.knocks[-1] - listens_at
        assert late <= max(0.01, min(1.0, listens_at / 8)) + 1e-9, (listens_at, late)
        if listens_at == 20.0:
            assert len(clock.knocks) < 70  # ~30 in the first second, then one a second


def test_a_declared_check_longer_than_the_startup_timeout_extends_it() -> None:
    slow = HealthCheck(path="/up", timeout=10.0, attempts=5, initial_delay=30.0, interval=5.0)
    assert P.startup_limit(assignment("i1", spec=spec_with(slow)), POLICY) == 30 + 50 + 20
    quick = HealthCheck(path="/up", timeout=1.0, attempts=2)
    assert P.startup_limit(assignment("i1", spec=spec_with(quick)), POLICY) == 60.0
    assert P.startup_limit(assignment("i1", spec=spec_with(None)), POLICY) == 60.0


def test_status_line() -> None:
    assert status_of(b"HTTP/1.1 503 Service Unavailable\r\n") == 503
    assert status_of(b"HTTP/1.0 200\r\n") == 200
    assert status_of(b"SSH-2.0-OpenSSH\r\n") == 0
    assert status_of(b"") == 0


def test_a_running_instance_fails_only_after_attempts_in_a_row() -> None:
    """health.watch through probe.keep_checking: a pass starts the count over;
    nothing listening counts (it was serving); the failure says the last answer."""
    clock = FakeClock()
    bad, good = Answer(status=500), Answer(status=200)
    refused = Answer(error="connection refused", refused=True)
    answers = [good, bad, bad, good, bad, refused, bad]
    failure = asyncio.run(keep_checking(DECLARED, scripted(clock, answers), clock.sleep, 10.0))
    assert failure == "GET /health answered 500 after 3 attempts (expected 200-399)"
    # Every 10 s while passing, the check's interval (1 s) after a failure.
    assert clock.knocks == [10.0, 20.0, 21.0, 22.0, 32.0, 33.0, 34.0]
