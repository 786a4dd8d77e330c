"""The lease holder's picture of desired state and placements between passes.

Pure bookkeeping (no I/O, no clock), so a reconcile pass can look only at
the apps something happened to. Theory of operation: the model holds each
app's desired inputs (`desired.AppInputs`, replaced when a read says the
app changed) and the placements, indexed by app, by instance and by host,
with the memory and instance count every host holds. A pass asks it which
apps are *dirty*:

  - apps a read found changed (rows of the app, its formation, releases,
    domains, certificates or placements written by someone else);
  - apps with an instance whose reported state, port or restarts moved, or
    placed on a host that came up, went down, or changed address;
  - apps still short of instances (no room before) or of spread (copies on
    one host): room may have come since (a host, an app scaled down or
    removed), and placing them in the same call as the others keeps the
    order a full pass would place them in (none, on a healthy cluster);
  - apps with a pending release (rollouts have deadlines).

Everything else is as the last pass left it: its placements, assignments
and routes are neither rebuilt nor compared. Placing the dirty apps takes
what the other apps hold per host (`others`) as already reserved, which
makes placing a few apps equivalent to placing all of them.
"""

from __future__ import annotations

import gc
from collections import Counter
from collections.abc import Iterable

from roost.controller.desired import AppInputs, Desired
from roost.controller.scheduler import MIN_SPREAD, Placement, Want


class Model:
    def __init__(self, instance_memory_mb: int) -> None:
        self.default_mb = instance_memory_mb
        self.reset()

    def reset(self) -> None:
        """Forget everything: the next read is a full one."""
        self.apps: dict[str, AppInputs] = {}  # by app name
        self.names: dict[int, str] = {}  # app id -> name
        self.placed: dict[str, list[Placement]] = {}  # by app name
        self.by_id: dict[str, Placement] = {}
        self.on_host: dict[str, set[str]] = {}  # host -> instance ids
        self.reserved: Counter[str] = Counter()  # host -> MB held
        self.count: Counter[str] = Counter()  # host -> instances held
        self._mb: dict[str, int] = {}  # instance id -> MB it holds
        # Apps the last placing left short of instances or of spread.
        self.wanting: set[str] = set()
        self.pending: set[str] = set()  # apps with a pending release
        self.loaded = False  # a full read has been absorbed

    # ------------------------------------------------------------ desired state

    def absorb(self, d: Desired) -> set[str]:
        """Take a read's changed apps in; returns their names (old and new)."""
        if d.full:
            self.reset()
        changed: set[str] = set()
        for app_id, inputs in d.apps.items():
            old = self.names.get(app_id)
            if old is not None:
                changed.add(old)
                if inputs is None or inputs.row.name != old:
                    self._forget(old)
                    del self.names[app_id]
            if inputs is None:
                continue
            name = inputs.row.name
            changed.add(name)
            self.names[app_id] = name
            self.apps[name] = inputs
            if inputs.pending:
                self.pending.add(name)
            else:
                self.pending.discard(name)
            self.set_placements(name, d.placements.get(app_id, []))
        self.loaded = True
        return changed

    def _forget(self, name: str) -> None:
        self.set_placements(name, [])
        del self.placed[name]
        self.apps.pop(name, None)
        self.wanting.discard(name)
        self.pending.discard(name)

    def app_ids(self) -> dict[str, int]:
        return {name: a.row.id for name, a in self.apps.items()}

    # ------------------------------------------------------------ placements

    def memory_of(self, p: Placement) -> int:
        a = self.apps.get(p.app)
        size = a.sizes.get(p.process_type) if a is not None else None
        return size or self.default_mb

    def set_placements(self, app: str, placements: list[Placement]) -> list[Placement]:
        """Replace the app's placements; returns the ones it had."""
        old = self.placed.get(app, [])
        for p in old:
            self.by_id.pop(p.instance_id, None)
            self.on_host[p.host_id].discard(p.instance_id)
            self.reserved[p.host_id] -= self._mb.pop(p.instance_id, 0)
            self.count[p.host_id] -= 1
        for p in placements:
            mb = self.memory_of(p)
            self.by_id[p.instance_id] = p
            self.on_host.setdefault(p.host_id, set()).add(p.instance_id)
            self._mb[p.instance_id] = mb
            self.reserved[p.host_id] += mb
            self.count[p.host_id] += 1
        self.placed[app] = placements
        return old

    def others(self, apps: Iterable[str]) -> tuple[Counter[str], Counter[str]]:
        """(MB, instances) per host held by every app but `apps`."""
        reserved, count = self.reserved.copy(), self.count.copy()
        for app in apps:
            for p in self.placed.get(app, ()):
                reserved[p.host_id] -= self._mb.get(p.instance_id, 0)
                count[p.host_id] -= 1
        return reserved, count

    def note_placed(self, app: str, wants: list[Want], placed: list[Placement]) -> None:
        """Remember whether placing left `app` short (of instances or spread)."""
        have = Counter((p.release, p.process_type) for p in placed)
        hosts: dict[tuple[int, str], set[str]] = {}
        for p in placed:
            hosts.setdefault((p.release, p.process_type), set()).add(p.host_id)
        short = any(
            have[(w.release, w.process_type)] < w.count
            or len(hosts.get((w.release, w.process_type), ())) < min(MIN_SPREAD, w.count)
            for w in wants
        )
        if short:
            self.wanting.add(app)
        else:
            self.wanting.discard(app)

    # ------------------------------------------------------------ what a pass looks at

    def dirty(self, instances: Iterable[str], hosts: Iterable[str]) -> set[str]:
        """Apps touched by these moved instances and hosts (see the docstring)."""
        out = self.pending | self.wanting
        for iid in instances:
            p = self.by_id.get(iid)
            if p is not None:
                out.add(p.app)
        for host in hosts:
            out |= self.apps_on(host)
        return out

    def apps_on(self, host: str) -> set[str]:
        """The apps with an instance placed on `host`."""
        return {self.by_id[iid].app for iid in self.on_host.get(host, ())}


def parts(d: Desired, step: int) -> list[Desired]:
    """`d` as reads of at most `step` apps each, for `Model.absorb` one by
    one with the loop served between (a new holder's first read names every
    app: absorbed at once, 25,000 apps held the loop for a quarter of a
    second). The first part keeps `full` (the model starts afresh) and the
    release rows fetched; absorbing the parts in order is absorbing `d`."""
    ids = list(d.apps)
    if len(ids) <= step:
        return [d]
    out = []
    for i in range(0, len(ids), step):
        chunk = ids[i : i + step]
        out.append(
            Desired(
                version=d.version,
                full=d.full and i == 0,
                apps={a: d.apps[a] for a in chunk},
                placements={a: d.placements[a] for a in chunk if a in d.placements},
                fetched=d.fetched if i == 0 else {},
            )
        )
    return out


def freeze_heap() -> None:
    """Take what is alive now (the model, assignments and routes of every
    app, which live until they change) out of the cyclic collector's sight.

    A collection scans what its generations hold: at 50,000 instances one
    of the young generations, set off mid-pass, held the loop (and every
    heartbeat) for 250-350 ms, and a full one scans the whole heap
    (measured with bench/loopprobe.py). Frozen objects are still freed by
    reference counting when they change; only cycles among them would stay.
    """
    gc.freeze()
