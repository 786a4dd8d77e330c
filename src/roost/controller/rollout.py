"""Deciding when a new release takes over, or has failed. Pure.

A release is "pending" from a successful build until every instance the
formation asks of it reports up, its web instances having passed their
health check (then it is promoted, and the previous release's instances are
dropped), or until one of its instances fails its health check, keeps
crashing, no host has room for it or the rollout takes too long (then it
fails, its instances are dropped, and the previous release, which never
stopped, keeps serving).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from roost.wire.messages import InstanceStatus

CRASHES_BEFORE_FAILURE = 2
# A process that serves no port (a worker) is "up" from its start, with no
# health check to pass: one that dies a moment later (a memory hog killed
# in its first second) was promoted whenever a heartbeat saying "up" came
# first. So a worker counts as up only once seen up this long, on the
# controller's clock, without a restart in between (`note_up`).
WORKER_SETTLE_S = 3.0


@dataclass(frozen=True)
class Decision:
    verdict: Literal["wait", "promote", "fail"]
    reason: str = ""


def note_up(
    seen: Mapping[str, tuple[int, float]],
    placed: list[tuple[str, str, int]],
    statuses: Mapping[str, InstanceStatus],
    now: float,
) -> dict[str, tuple[int, float]]:
    """Instance id -> (its restarts, when it was first seen up with them), for the
    placed instances up now; `seen` is the last pass's answer (pure)."""
    out: dict[str, tuple[int, float]] = {}
    for instance_id, _, _ in placed:
        st = statuses.get(instance_id)
        if st is None or st.state != "up":
            continue
        was = seen.get(instance_id)
        out[instance_id] = was if was is not None and was[0] == st.restarts else (st.restarts, now)
    return out


def decide(
    placed: list[tuple[str, str, int]],  # (instance_id, process_type, idx) of the pending release
    wanted_total: int,
    statuses: Mapping[str, InstanceStatus],
    started_at: float,
    now: float,
    timeout_s: float,
    no_room: str = "",
    up_since: Mapping[str, tuple[int, float]] | None = None,
    settle_s: float = 0.0,
) -> Decision:
    """`no_room`: why the placement left some of the release's instances
    unplaced for want of room (`scheduler.no_room`), "" when it did not:
    then the release fails at once, with that reason, instead of waiting
    for its timeout (room is not expected to appear by itself).
    `up_since` (`note_up`) and `settle_s`: a worker (no port, no socket)
    counts as up only once up that long."""
    for instance_id, ptype, idx in placed:
        st = statuses.get(instance_id)
        if st is None:
            continue
        if st.unhealthy:
            why = (st.last_error.strip() or "no answer").splitlines()[0]
            return Decision("fail", f"{ptype}.{idx} failed its health check: {why}")
        if st.restarts >= CRASHES_BEFORE_FAILURE or (st.state == "crashed" and st.restarts >= 1):
            why = st.last_error.strip() or "exited"
            return Decision("fail", f"{ptype}.{idx} crashed {st.restarts + 1} times: {why}")
    if wanted_total == 0:
        return Decision("promote")
    if no_room and len(placed) < wanted_total:
        return Decision("fail", no_room)
    since = up_since or {}

    def is_up(iid: str) -> bool:
        s = statuses.get(iid)
        if s is None or s.state != "up":
            return False
        if settle_s <= 0 or s.port or s.unix_socket:
            return True  # a web instance passed its health check to be "up"
        return now - since.get(iid, (0, now))[1] >= settle_s

    up = sum(1 for iid, _, _ in placed if is_up(iid))
    if len(placed) >= wanted_total and up == len(placed):
        return Decision("promote")
    if now - started_at > timeout_s:
        waiting = [
            f"{t}.{i}" for iid, t, i in placed if iid not in statuses or statuses[iid].state != "up"
        ]
        missing = wanted_total - len(placed)
        detail = ", ".join(waiting) or f"{missing} instance(s) could not be placed"
        return Decision("fail", f"release did not come up within {timeout_s:.0f}s: {detail}")
    return Decision("wait")
