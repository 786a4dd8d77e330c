from __future__ import annotations

from datetime import UTC, datetime

from roost.controller.cron import (
    CLAIMED,
    FINISHED,
    LOST,
    MISSED,
    QUEUE_LIMIT,
    QUEUED,
    SKIPPED,
    STARTED,
    Claim,
    ClaimKey,
    Due,
    Job,
    NewClaim,
    Plan,
    cut_lines,
    due,
    flush_tails,
    plan,
    slot_of,
)
from roost.wire.messages import MAX_LOG_LINE


def _ts(y: int, mo: int, d: int, h: int, mi: int, s: int = 0) -> float:
    return datetime(y, mo, d, h, mi, s, tzinfo=UTC).timestamp()


EVERY_5 = Job("app", "./manage.py sync", "*/5 * * * *")
DAILY = Job("app", "django-admin.py cleanup", "0 0 * * *")


def test_due_in_window_only() -> None:
    got = due([EVERY_5], _ts(2026, 1, 1, 10, 0, 30), _ts(2026, 1, 1, 10, 12, 0), max_catchup=60)
    assert [d.slot for d in got] == [
        slot_of(_ts(2026, 1, 1, 10, 5)),
        slot_of(_ts(2026, 1, 1, 10, 10)),
    ]


def test_a_slot_is_due_once_across_consecutive_windows() -> None:
    t0 = _ts(2026, 1, 1, 10, 4, 50)
    first = due([EVERY_5], t0, t0 + 5)  # 10:04:50 -> 10:04:55
    second = due([EVERY_5], t0 + 5, t0 + 15)  # -> 10:05:05
    third = due([EVERY_5], t0 + 15, t0 + 25)
    assert first == [] and len(second) == 1 and third == []


def test_catchup_is_bounded() -> None:
    got = due(
        [Job("a", "x", "* * * * *")], _ts(2026, 1, 1, 0, 0), _ts(2026, 1, 2, 0, 0), max_catchup=5
    )
    assert len(got) == 5


def test_a_new_job_is_not_due_for_slots_from_before_it_existed() -> None:
    # A new holder looks a catch-up window back; a job whose release went
    # live within it runs only for the slots that began after.
    live = _ts(2026, 1, 1, 10, 2, 30)
    old = Job("a", "x", "* * * * *")
    new = Job("a", "y", "* * * * *", not_before=live)
    got = due([old, new], _ts(2026, 1, 1, 9, 0), _ts(2026, 1, 1, 10, 4, 10), max_catchup=5)
    slots = {j: [d.slot for d in got if d.job == j] for j in (old, new)}
    assert slots[old] == [slot_of(_ts(2026, 1, 1, 10, m)) for m in range(0, 5)]
    assert slots[new] == [slot_of(_ts(2026, 1, 1, 10, m)) for m in (3, 4)]


def test_midnight_job_and_invalid_schedule() -> None:
    bad = Job("a", "y", "not a schedule")
    got = due([DAILY, bad], _ts(2026, 1, 1, 23, 59, 30), _ts(2026, 1, 2, 0, 0, 30))
    assert [d.job for d in got] == [DAILY]


def test_job_key_is_stable_and_distinct() -> None:
    assert EVERY_5.key == Job("other-app", "./manage.py sync", "*/5 * * * *").key
    assert EVERY_5.key != Job("app", "./manage.py sync", "*/10 * * * *").key


# ---------------------------------------------------------------- slots of any length


def test_short_slots_count_as_minutes() -> None:
    # Two-second "minutes": slot N is matched as Unix minute N.
    job = Job("a", "x", "*/2 * * * *")
    got = due([job], 1000.0, 1010.0, max_catchup=60, slot_s=2.0)
    assert [d.slot for d in got] == [502, 504]


# ---------------------------------------------------------------- plan

APP = 7
EVERY = Job("app", "./tick", "* * * * *", app_id=APP)
SKIP = Job("app", "./sync", "* * * * *", app_id=APP, overlap="skip")
QUEUE = Job("app", "./report", "* * * * *", app_id=APP, overlap="queue")


def claim(job: Job, slot: int, state: str, fence: int = 1, runner: str = "") -> Claim:
    return Claim(APP, job.key, slot, fence, state, runner=runner, session="s" if runner else "")


def plan_for(
    claims: list[Claim],
    due_slots: list[int] | None = None,
    jobs: tuple[Job, ...] = (EVERY,),
    now_slot: int = 100,
    fence: int = 2,
    active: frozenset[ClaimKey] = frozenset(),
    alive: frozenset[str] = frozenset({"r1"}),
    settled: bool = True,
) -> Plan:
    return plan(
        jobs={(j.app_id, j.key): j for j in jobs},
        claims=claims,
        due_now=[Due(j, s) for s in (due_slots or []) for j in jobs],
        now_slot=now_slot,
        fence=fence,
        active=active,
        alive=alive,
        settled=settled,
    )


def test_a_due_slot_is_claimed() -> None:
    p = plan_for([], [100])
    assert p.new == [NewClaim(EVERY, 100, CLAIMED)] and not (p.run or p.follow or p.finish)


def test_a_decided_slot_is_not_claimed_again_after_a_takeover() -> None:
    # A new holder looks back over the window: slots already claimed, even
    # finished ones, are left alone.
    claims = [claim(EVERY, 97, FINISHED), claim(EVERY, 98, STARTED, runner="r1")]
    p = plan_for(claims, [96, 97, 98, 99])
    assert [n.slot for n in p.new] == [96, 99]
    assert p.follow == [claims[1]]


def test_a_claim_that_never_started_is_taken_over_within_the_window_only() -> None:
    recent, old = claim(EVERY, 98, CLAIMED), claim(EVERY, 90, CLAIMED)
    p = plan_for([recent, old])
    assert p.run == [recent] and p.finish == [(old, MISSED)]


def test_a_started_run_is_followed_or_lost_with_its_runner() -> None:
    on_r1, on_r2 = claim(EVERY, 90, STARTED, runner="r1"), claim(EVERY, 91, STARTED, runner="r2")
    p = plan_for([on_r1, on_r2])
    assert p.follow == [on_r1] and p.finish == [(on_r2, LOST)]
    # Until the holder knows which hosts are up, no runner is taken for dead.
    assert plan_for([on_r1, on_r2], settled=False).follow == [on_r1, on_r2]


def test_own_and_newer_claims_are_left_alone() -> None:
    mine = claim(EVERY, 99, CLAIMED, fence=2)
    newer = claim(EVERY, 98, CLAIMED, fence=3)
    p = plan_for([mine, newer], active=frozenset({mine.key}))
    assert not (p.new or p.run or p.follow or p.finish)


def test_claims_of_a_job_no_longer_declared_are_missed_but_runs_are_followed() -> None:
    gone = Job("app", "./old", "* * * * *", app_id=APP)
    claimed, queued = claim(gone, 99, CLAIMED), claim(gone, 99, QUEUED)
    started = claim(gone, 98, STARTED, runner="r1")
    p = plan_for([claimed, queued, started])
    assert p.finish == [(claimed, MISSED), (queued, MISSED)] and p.follow == [started]


def test_overlap_allow_runs_beside_a_running_one() -> None:
    p = plan_for([claim(EVERY, 99, STARTED, runner="r1")], [100])
    assert p.new == [NewClaim(EVERY, 100, CLAIMED)]


def test_overlap_skip_records_the_slot_skipped_while_one_runs() -> None:
    running = claim(SKIP, 99, STARTED, runner="r1", fence=2)
    p = plan_for([running], [100, 101], jobs=(SKIP,), active=frozenset({running.key}))
    assert p.new == [NewClaim(SKIP, 100, FINISHED, SKIPPED), NewClaim(SKIP, 101, FINISHED, SKIPPED)]
    # Nothing running: claimed; a second slot in the same tick is skipped behind it.
    p = plan_for([], [100, 101], jobs=(SKIP,))
    assert p.new == [NewClaim(SKIP, 100, CLAIMED), NewClaim(SKIP, 101, FINISHED, SKIPPED)]


def test_overlap_skip_is_not_fooled_by_finished_slots_in_the_lookback() -> None:
    done = [claim(SKIP, s, FINISHED) for s in (96, 97, 98, 99)]
    p = plan_for(done, [96, 97, 98, 99, 100], jobs=(SKIP,))
    assert p.new == [NewClaim(SKIP, 100, CLAIMED)]


def test_overlap_queue_waits_and_starts_the_oldest_when_nothing_runs() -> None:
    running = claim(QUEUE, 98, STARTED, runner="r1", fence=2)
    p = plan_for([running], [99], jobs=(QUEUE,), active=frozenset({running.key}))
    assert p.new == [NewClaim(QUEUE, 99, QUEUED)] and p.run == []
    waiting = [claim(QUEUE, 99, QUEUED), claim(QUEUE, 100, QUEUED)]
    p = plan_for(waiting, jobs=(QUEUE,))
    assert p.run == [waiting[0]]


def test_overlap_queue_is_bounded() -> None:
    running = claim(QUEUE, 80, STARTED, runner="r1", fence=2)
    waiting = [claim(QUEUE, s, QUEUED) for s in range(81, 81 + QUEUE_LIMIT)]
    p = plan_for([running, *waiting], [100], jobs=(QUEUE,), active=frozenset({running.key}))
    assert p.new == [NewClaim(QUEUE, 100, FINISHED, SKIPPED)]


# ---------------------------------------------------------------- output


def test_output_is_cut_into_lines_across_chunks_and_streams() -> None:
    lines, tail = cut_lines({}, [("stdout", b"a\nb"), ("stderr", b"x"), ("stdout", b"c\n")])
    assert lines == [("stdout", "a"), ("stdout", "bc")] and tail == {"stderr": b"x"}
    lines, tail = cut_lines(tail, [("stderr", b"y" * 10)], max_line=4)
    assert lines == [("stderr", "xyyy"), ("stderr", "yyyy")] and tail == {"stderr": b"yyy"}
    assert flush_tails(tail) == [("stderr", "yyy")]


def test_a_long_line_in_pieces_is_kept_whole_as_an_instances_would_be() -> None:
    # A 5 kB line that arrives in two reads (a pipe's usual 4 KiB) is one
    # line, as the runner keeps an instance's: the cut is the wire's limit.
    line = b"x" * 5000
    lines, tail = cut_lines({}, [("stdout", line[:4096])])
    assert lines == []
    lines, tail = cut_lines(tail, [("stdout", line[4096:] + b"\n")])
    assert lines == [("stdout", line.decode())] and tail == {}
    lines, tail = cut_lines({}, [("stdout", b"y" * (MAX_LOG_LINE + 1))])
    assert lines == [("stdout", "y" * MAX_LOG_LINE)] and tail == {"stdout": b"y"}
