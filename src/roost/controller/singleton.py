"""Singleton process types: the old instance stops before the new one starts. Pure.

A release rolling out places all its instances beside the serving
release's, which keep running until it is promoted: new workers start
before old ones stop. That is wrong for a process that must never run
twice, a clock or a scheduler, so an app marks such a type a singleton
(app.json `formation`: `"clock": {"quantity": 1, "singleton": true}`,
`AppSpec.singletons`). For a singleton type:

  - at most one instance is wanted, whatever the formation says;
  - while a pending release marks it a singleton, the serving release's
    instance of it is not wanted (it is stopped), though the serving
    release's other types run on until promotion;
  - an instance of it that is not placed yet is held back while any other
    instance of the app's type is reported holding a process (starting, up
    or stopping) by a live host: it starts only once the old one is gone.

The rollout still waits for the held instance: `arrange` gives back the
wants with its count (so `rollout.decide` counts it) beside what may be
placed now. The same hold covers a restart of the type and a move off a
host: the new one waits for the old to be reported gone. A host that is
down reports nothing, so its instance counts as gone; one cut off from
the controllers but still running is the case this cannot see.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass, replace

from roost.controller.scheduler import Placement, Want
from roost.controller.softstate import SoftState
from roost.controller.store import ReleaseRow
from roost.wire.messages import InstanceStatus

# Runner states in which an instance may have a process (runner/model.py).
HOLDS_A_PROCESS = frozenset({"starting", "up", "stopping"})


def arrange(
    wants: list[Want],
    app_id: int,
    releases: Mapping[tuple[int, int], ReleaseRow],
    serving: ReleaseRow | None,
    placed: Iterable[Placement],
    statuses: Mapping[str, InstanceStatus],
    departing: Container[str] = (),
) -> tuple[list[Want], list[Want]]:
    """One app's wants (`desired.wants`): (all of them, singletons at one;
    those to place now). `releases` holds the app's release rows by (app id,
    version), `placed` is the app's placements, `statuses` what live hosts
    report (looked through only when a singleton waits to be placed),
    `departing` the app's types with an instance dropped that its host has
    not yet confirmed gone (`Departures`)."""
    singles = {w.release: _singletons(releases.get((app_id, w.release))) for w in wants}
    if not any(singles.values()):
        return wants, wants  # most apps: nothing to do
    at = serving.version if serving is not None else None
    stop_first = set().union(*(s for r, s in singles.items() if r != at))
    capped = [
        replace(w, count=min(w.count, 1)) if w.process_type in singles[w.release] else w
        for w in wants
    ]
    have: dict[tuple[int, str], set[str]] = {}
    for p in placed:
        have.setdefault((p.release, p.process_type), set()).add(p.instance_id)
    now: list[Want] = []
    for w in capped:
        if w.release == at and w.process_type in stop_first:
            continue  # the pending release's runs alone: this one stops first
        waits = w.process_type in singles[w.release] and not have.get((w.release, w.process_type))
        if waits and (
            w.process_type in departing  # dropped earlier, its host has not said so
            or any(t == w.process_type for _, t in have)  # placed: dropped in this pass
            or _running(w, statuses)
        ):
            continue  # held until the old one is gone
        now.append(w)
    return capped, now


def _singletons(rel: ReleaseRow | None) -> frozenset[str]:
    return frozenset(rel.spec.singletons) if rel is not None else frozenset()


def _running(w: Want, statuses: Mapping[str, InstanceStatus]) -> bool:
    """Whether an instance of `w`'s app and type may have a process (none
    of `w`'s release's is placed, so any such is another one)."""
    return any(
        st.app == w.app and st.process_type == w.process_type and st.state in HOLDS_A_PROCESS
        for st in statuses.values()
    )


@dataclass(frozen=True)
class Departing:
    """A singleton's instance dropped from its host's assignment: gone once
    the host has taken an assignment without it, (fence, version) or newer."""

    process_type: str
    host: str
    fence: int
    version: int = 0  # the host's first assignment without it; 0: not yet published


class Departures:
    """The lease holder's singleton instances dropped but not yet confirmed
    gone. Between the pass that drops one and its runner's next heartbeat the
    instance may run though no heartbeat said so yet (it may even have been
    started a moment ago): the new instance waits for the host's
    acknowledgement as well as for the statuses (`arrange`'s `departing`).
    Memory only: a new lease holder goes by the statuses alone."""

    def __init__(self) -> None:
        self._apps: dict[str, list[Departing]] = {}

    def dropped(
        self,
        app: str,
        app_id: int,
        releases: Mapping[tuple[int, int], ReleaseRow],
        old: Iterable[Placement],
        kept: Container[str],
        fence: int,
    ) -> None:
        """The app's placements went from `old` to those whose ids are `kept`."""
        for p in old:
            if p.instance_id in kept:
                continue
            rel = releases.get((app_id, p.release))
            if rel is not None and p.process_type in rel.spec.singletons:
                self._apps.setdefault(app, []).append(Departing(p.process_type, p.host_id, fence))

    def published(self, version_of: Callable[[str], int]) -> None:
        """Hosts' assignments were just published (after the drops):
        `version_of(host)` is each one's version now."""
        for app, entries in self._apps.items():
            if any(not d.version for d in entries):
                self._apps[app] = [
                    d if d.version else replace(d, version=version_of(d.host)) for d in entries
                ]

    def waiting(self, app: str, acked: Callable[[str], tuple[int, int] | None]) -> set[str]:
        """The app's types still departing; `acked(host)` is the (fence,
        version) a host's last heartbeat took, None when it is down (its
        instances count as gone). Confirmed ones are forgotten."""
        entries = self._apps.get(app)
        if not entries:
            return set()
        left = []
        for d in entries:
            seen = acked(d.host)
            if seen is not None and (not d.version or seen < (d.fence, d.version)):
                left.append(d)
        if left:
            self._apps[app] = left
        else:
            del self._apps[app]
        return {d.process_type for d in left}

    def forget(self, apps: Iterable[str]) -> None:
        for app in apps:
            self._apps.pop(app, None)


def acked_by(soft: SoftState) -> Callable[[str], tuple[int, int] | None]:
    """`Departures.waiting`'s `acked` from the soft state: the (fence,
    version) a live host's last heartbeat said it converges to."""

    def acked(host: str) -> tuple[int, int] | None:
        seen = soft.hosts.get(host)
        if seen is None or seen.down_since is not None:
            return None
        return seen.heartbeat.fence, seen.heartbeat.version

    return acked
