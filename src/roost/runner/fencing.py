"""Which assignments a runner accepts: fencing tokens and versions.

Theory of operation. An assignment carries the scheduler lease's fencing token
(`fence`, grows every time the lease changes hands) and a `version` that the
lease holder increases with every new assignment. A deposed scheduler that
wakes up from a pause may still send assignments; they carry a lower fence and
are refused. Within one fence, versions order the holder's assignments, so a
late reply carrying an older version is ignored. A higher fence wins whatever
its version (a new holder numbers from wherever it likes).

The runner holds (fence, version) of the assignment it converges to; the fence
it holds is also the highest it has accepted. The gate is pure: it judges and
returns the new held pair, and the caller logs and applies.

A fenced RunStart (a cron run, sent by the lease holder) is judged against the
highest fence seen in assignments or fenced runs, and against the session ids
of fenced runs already started: a session id starts at most once, so a
deposed holder's late (or retried) RunStart cannot run a slot a second time
once the run has ended and been collected (`judge_run`).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from enum import Enum

from roost.wire.messages import Assignment


class Verdict(Enum):
    ACCEPT = "accept"
    SAME = "same"  # the assignment held already (idempotent repeat)
    STALE_FENCE = "stale-fence"  # from a deposed scheduler: refused
    OLD_VERSION = "old-version"  # older than the one held: ignored
    WRONG_HOST = "wrong-host"  # meant for another host: refused
    ALREADY_RAN = "already-ran"  # a fenced run's session id that started before


@dataclass(frozen=True)
class Held:
    fence: int = 0
    version: int = 0


def is_newer(held: Held, fence: int, version: int) -> bool:
    """Whether an assignment (fence, version) would replace the one held."""
    return fence > held.fence or (fence == held.fence and version > held.version)


def judge(held: Held, host_id: str, incoming: Assignment) -> Verdict:
    if incoming.host_id != host_id:
        return Verdict.WRONG_HOST
    if incoming.fence < held.fence:
        return Verdict.STALE_FENCE
    if incoming.fence == held.fence:
        if incoming.version < held.version:
            return Verdict.OLD_VERSION
        if incoming.version == held.version and held != Held():
            return Verdict.SAME
    return Verdict.ACCEPT


def pick(
    held: Held, host_id: str, incoming: list[Assignment]
) -> tuple[Held, Assignment | None, list[tuple[Assignment, Verdict]]]:
    """Judge several replies at once (one per controller replica).

    Returns the new held pair, the assignment to converge to (None when
    nothing new was accepted) and every non-accepted one with its verdict, for
    the log. Replies are judged in (fence, version) order so the newest wins.
    """
    accepted: Assignment | None = None
    rejected: list[tuple[Assignment, Verdict]] = []
    for asg in sorted(incoming, key=lambda a: (a.fence, a.version)):
        verdict = judge(held, host_id, asg)
        if verdict is Verdict.ACCEPT:
            held = Held(asg.fence, asg.version)
            accepted = asg
        elif verdict is not Verdict.SAME:
            rejected.append((asg, verdict))
    return held, accepted, rejected


def judge_run(seen_fence: int, started: Collection[str], fence: int, session: str) -> Verdict:
    """Whether a fenced RunStart (`fence` > 0) may start `session`."""
    if fence < seen_fence:
        return Verdict.STALE_FENCE
    if session in started:
        return Verdict.ALREADY_RAN
    return Verdict.ACCEPT
