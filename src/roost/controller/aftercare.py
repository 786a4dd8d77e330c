"""Watching a release after it went live, and rolling it back by itself. Pure.

Theory of operation: a release is promoted once every instance passed its
health check, but an app can break later: a worker that dies on its first
job, a web process that exits once a cache warms, a check that starts
failing. For `window_s` after promotion (ROOST_ROLLBACK_WINDOW_S, 5 minutes
by default; the release's `promoted_at`, written with its move to
`active`), the scheduler lease holder looks at the serving release's
instances whenever their heartbeats move (`trouble`): one that crashed
CRASHES times (the rollout's own threshold, counted over the instance's
life, so a crash during the rollout and one after count together) or
stopped on a failed health check is crash-looping. Then (`decide`) the
app goes back to the release that served before it: a new release
copying that one's image and config, as `roost rollback` does, while the
bad one is marked `rolled-back` in the same transaction (the mark is the
claim, a compare-and-set on `active`).

No flapping: a release is rolled back from at most once (its status leaves
`active`); the release that served before must have left `active` by a
promotion (`superseded`), so a copy made by an automatic rollback, whose
predecessor is `rolled-back`, is never rolled back in turn; a release
whose predecessor runs the same image with the same config is not rolled
back (the copy would crash the same way); and while a newer release is
rolling out nothing is done, since that release replaces the bad one
anyway (a rollback would supersede it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from roost.controller.deployflow import ReleaseState
from roost.controller.rollout import CRASHES_BEFORE_FAILURE
from roost.wire.messages import InstanceStatus

CRASHES = CRASHES_BEFORE_FAILURE
# Instance states a crashed process waits in before its runner restarts it.
_DOWN = ("crashed", "backoff")


class ReleaseLike(Protocol):
    """What `decide` reads of a release row (store.ReleaseRow)."""

    @property
    def version(self) -> int: ...
    @property
    def status(self) -> str: ...
    @property
    def promoted_at(self) -> float | None: ...
    @property
    def image_digest(self) -> str: ...
    @property
    def config(self) -> dict[str, str]: ...


@dataclass(frozen=True)
class Decision:
    """`rollback` to `target`; `wait` (look again when instances move); or
    `done`: this release is never rolled back by itself (past its window,
    not serving, nothing to go back to), so stop looking at it."""

    verdict: Literal["rollback", "wait", "done"]
    target: int = 0
    reason: str = ""


def crashes(st: InstanceStatus) -> int:
    """Times the instance's process ended: each restart followed an exit,
    and one waiting to be restarted has ended once more."""
    return st.restarts + (1 if st.state in _DOWN else 0)


def trouble(
    placed: Iterable[tuple[str, str, int]],  # (instance_id, process_type, idx) of the release
    statuses: Mapping[str, InstanceStatus],
) -> str:
    """Why the release's instances are crash-looping, or "" when they are not."""
    for instance_id, ptype, idx in placed:
        st = statuses.get(instance_id)
        if st is None:
            continue
        lines = [ln.strip() for ln in st.last_error.splitlines() if ln.strip()] or ["exited"]
        if st.unhealthy:  # the check's last answer (what follows is the app's output)
            return f"{ptype}.{idx} failed its health check: {lines[0]}"
        if crashes(st) >= CRASHES:
            # How it ended, and its last word (a traceback's is the exception).
            why = lines[0] if len(lines) == 1 else f"{lines[0]}: {lines[-1]}"
            return f"{ptype}.{idx} crashed {crashes(st)} times: {why}"
    return ""


def decide(
    serving: ReleaseLike,
    releases: Sequence[ReleaseLike],  # the app's, any order (fresh from the store)
    why: str,  # trouble(...) of the serving release's instances
    now: float,  # wall clock, as promoted_at
    window_s: float,
) -> Decision:
    if serving.status != ReleaseState.ACTIVE or serving.promoted_at is None:
        return Decision("done")  # rolled back from already, or promoted before this existed
    if now - serving.promoted_at > window_s:
        return Decision("done")
    if not why:
        return Decision("wait")
    if any(r.version > serving.version and r.status == ReleaseState.PENDING for r in releases):
        return Decision("wait")  # a newer release rolling out replaces it anyway
    served = (ReleaseState.SUPERSEDED, ReleaseState.ROLLED_BACK)
    before = [r for r in releases if r.version < serving.version and r.status in served]
    if not before:
        return Decision("done")  # the app's first release: nothing to go back to
    prev = max(before, key=lambda r: r.version)
    if prev.status == ReleaseState.ROLLED_BACK:
        return Decision("done")  # it is itself the copy an automatic rollback made
    if prev.image_digest == serving.image_digest and prev.config == serving.config:
        return Decision("done")  # the same code and config would crash the same way
    return Decision("rollback", prev.version, why)


def message(bad: int, target: int, why: str) -> str:
    """What the log, the event and the release's description say."""
    return f"v{bad} crash-looped after promotion: {why}; rolled back to v{target}"
