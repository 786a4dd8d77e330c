"""Per-host declarative assignments, kept incrementally. Pure (no I/O, no clock).

Theory of operation: every reconcile pass turns the placements into one
Assignment per host: the full list of instances the host must run, with a
version the lease holder bumps whenever that list changes (runners converge
to the newest version of the highest fence they have seen). A host that no
longer has any placement still gets an (empty) assignment, which is how a
host that comes back from a partition learns to stop what it ran.

Over thousands of instances the pass must not rebuild and deep-compare every
InstanceAssignment: one built for an instance id is reused as long as what it
is made of is the same (same release spec object, image, environment), and
host contents are tuples of those shared objects, so comparing a host's old
and new content is mostly identity checks. `replace` goes further: given the
instances of the apps a pass looked at, it rebuilds only the hosts they are
on, so the pass costs what changed, not what exists.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from roost.appspec.model import AppSpec
from roost.controller.scheduler import Placement
from roost.wire.messages import InstanceAssignment, ProxyTarget


@dataclass(frozen=True)
class AssignmentInputs:
    """What an instance's assignment is made of, besides its placement."""

    image_digest: str
    spec: AppSpec
    env: dict[str, str]
    app_key: str = ""
    app_id: int = 0
    memory_mb: int = 0
    # The runner's data proxy listeners for the app (controller.pairproxy).
    data_proxy: tuple[ProxyTarget, ...] = ()
    # The app's own data quota (0: the runner's default). Not compared for
    # reuse: a running instance keeps the size it started with, and a new
    # size comes with a fresh release's instances (api/dataquota.py).
    data_quota_mb: int = 0


@dataclass
class HostAssignment:
    content: tuple[InstanceAssignment, ...]
    version: int


def instance_assignment(
    p: Placement, inputs: AssignmentInputs, old: InstanceAssignment | None
) -> InstanceAssignment:
    """`old` when nothing it is made of changed, else a new one."""
    if (
        old is not None
        and old.app == p.app
        and old.release == p.release
        and old.process_type == p.process_type
        and old.image_digest == inputs.image_digest
        and old.spec is inputs.spec
        and old.env == inputs.env
        and old.app_key == inputs.app_key
        and old.app_id == inputs.app_id
        and old.memory_mb == inputs.memory_mb
        and tuple(old.data_proxy) == inputs.data_proxy
    ):
        return old
    return InstanceAssignment(
        instance_id=p.instance_id,
        app=p.app,
        release=p.release,
        image_digest=inputs.image_digest,
        process_type=p.process_type,
        spec=inputs.spec,
        env=inputs.env,
        app_key=inputs.app_key,
        app_id=inputs.app_id,
        memory_mb=inputs.memory_mb,
        data_proxy=list(inputs.data_proxy),
        data_quota_mb=inputs.data_quota_mb,
    )


class AssignmentBook:
    def __init__(self) -> None:
        self.hosts: dict[str, HostAssignment] = {}
        self._instances: dict[str, InstanceAssignment] = {}
        self._host_of: dict[str, str] = {}  # instance id -> its host
        self._on_host: dict[str, dict[str, InstanceAssignment]] = {}
        self._of_app: dict[str, set[str]] = {}  # app -> its instance ids
        self._touched: set[str] = set()  # hosts staged changes are on

    def clear(self) -> None:
        """Forget every version (a new lease: versions restart under the new fence)."""
        self.hosts.clear()
        self._instances.clear()
        self._host_of.clear()
        self._on_host.clear()
        self._of_app.clear()
        self._touched.clear()

    def update(
        self,
        placed: Iterable[Placement],
        inputs_of: Callable[[Placement], AssignmentInputs | None],
        known_hosts: Iterable[str],
    ) -> list[str]:
        """Recompute every host's content; returns the hosts whose version moved.

        `inputs_of(p)` is None for a placement whose app or release is gone: it is
        left out (its host stops it). `known_hosts` get an assignment even
        when nothing is placed on them.
        """
        placed = list(placed)
        return self.replace(
            {*self._of_app, *(p.app for p in placed)}, placed, inputs_of, known_hosts
        )

    def replace(
        self,
        apps: Iterable[str],
        placed: Iterable[Placement],
        inputs_of: Callable[[Placement], AssignmentInputs | None],
        known_hosts: Iterable[str],
    ) -> list[str]:
        """The instances of `apps` become `placed` (theirs alone), every other
        instance stays as it is; returns the hosts whose version moved. A
        pass gives the apps it looked at: only the hosts their instances were
        or are on are rebuilt and compared."""
        self.stage(apps, placed, inputs_of)
        return self.commit(known_hosts)

    def stage(
        self,
        apps: Iterable[str],
        placed: Iterable[Placement],
        inputs_of: Callable[[Placement], AssignmentInputs | None],
    ) -> None:
        """`replace` without publishing: a pass taken in steps stages each
        step's apps, and the hosts' assignments change only at `commit`, all
        at once (a runner never sees half a pass)."""
        gone = [iid for app in apps for iid in self._of_app.pop(app, ())]
        kept: set[str] = set()
        touched = self._touched
        for p in placed:
            inputs = inputs_of(p)
            if inputs is None:
                continue
            iid = p.instance_id
            ia = instance_assignment(p, inputs, self._instances.get(iid))
            was = self._host_of.get(iid)
            if was is not None and was != p.host_id:
                del self._on_host[was][iid]
                touched.add(was)
            slot = self._on_host.setdefault(p.host_id, {})
            if slot.get(iid) is not ia:
                slot[iid] = ia
                touched.add(p.host_id)
            self._instances[iid] = ia
            self._host_of[iid] = p.host_id
            self._of_app.setdefault(p.app, set()).add(iid)
            kept.add(iid)
        for iid in gone:
            if iid in kept:
                continue
            host = self._host_of.pop(iid, None)
            self._instances.pop(iid, None)
            if host is not None:
                del self._on_host[host][iid]
                touched.add(host)

    def commit(self, known_hosts: Iterable[str]) -> list[str]:
        """Publish what was staged; returns the hosts whose version moved."""
        touched, self._touched = self._touched, set()
        touched.update(h for h in known_hosts if h not in self.hosts)
        changed: list[str] = []
        for host_id in touched:
            on = self._on_host.get(host_id, {})
            content = tuple(sorted(on.values(), key=lambda i: i.instance_id))
            old = self.hosts.get(host_id)
            if old is None or old.content != content:
                self.hosts[host_id] = HostAssignment(
                    content=content, version=(old.version if old else 0) + 1
                )
                changed.append(host_id)
        return sorted(changed)
