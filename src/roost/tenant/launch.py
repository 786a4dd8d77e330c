"""The one way to start a tenant process: identity, sandbox and limits together.

`Tenancy` belongs to a daemon (runner or builder) and knows the host: whether
it can sandbox at all (root, bubblewrap, cgroups), where its cgroups go, and
which system directories to bind. `Tenancy.prepare` turns "run this argv for
this app with these paths and limits" into a `Prepared` launch: the full
command line, the cgroup (made, limits written) and the code the child runs
between fork and exec. The spawner (a supervisor's `Child`, an exec session)
stays in charge of pipes, ptys and waiting; it calls `Prepared.preexec` in
the child and `Prepared.finish` once the process is gone. The runner's
per-instance shim (`roost.runner.shim`) is another process, so it gets the
same set-up as data (`Prepared.setup_data`) rather than as code.

Without root there is nobody to drop to and nothing to mount: the daemon
runs tenant code as itself, unsandboxed, and says so once, loudly (a
developer's laptop). As root, a missing bubblewrap or cgroup hierarchy is a
configuration error, not a reason to run tenants unconfined; `sandbox=off`
is the operator's explicit, logged way out.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from roost.tenant.cgroups import Cgroup, CgroupError, Hierarchy, Limits
from roost.tenant.identity import Identity, IdentityError, ensure_identity
from roost.tenant.sandbox import (
    BWRAP,
    SETPRIV,
    SHIELDED_SIGNALS,
    SandboxError,
    SandboxSpec,
    bwrap_argv,
    system_links,
)

log = logging.getLogger("roost.tenant")

TENANT_UMASK = 0o077
_SHIELDED = tuple(getattr(signal, f"SIG{name}") for name in SHIELDED_SIGNALS)


class TenantError(RuntimeError):
    """A tenant process cannot be started safely (the message says why)."""


@dataclass(frozen=True)
class TenantSpec:
    identity: Identity
    sandbox: SandboxSpec
    limits: Limits
    # The cgroup's name: unique among this daemon's live tenant processes.
    unit: str
    # What the process creates is its own (077); a build step's output goes
    # into images every app user reads, so the builder asks for 022.
    umask: int = TENANT_UMASK


@dataclass
class Prepared:
    argv: list[str]
    identity: Identity | None  # None: unsandboxed (not root)
    cgroup: Cgroup | None
    limits: Limits = field(default_factory=Limits)
    umask: int = TENANT_UMASK

    @property
    def sandboxed(self) -> bool:
        return self.identity is not None

    def preexec(self) -> None:
        """In the child, after fork and before exec (plain os calls only)."""
        if self.cgroup is not None:
            self.cgroup.attach_self()
        if self.identity is not None:
            os.umask(self.umask)
            # bwrap must survive the TERM/INT aimed at the tenant (see
            # roost.tenant.sandbox); `env --default-signal` undoes this inside.
            for sig in _SHIELDED:
                signal.signal(sig, signal.SIG_IGN)

    def setup_data(self) -> dict[str, object]:
        """What `preexec` does, as data, for a spawner in another process
        (roost.runner.shim): the cgroup files to join, the umask, the
        signals to ignore."""
        confined = self.identity is not None
        return {
            "cgroup_procs": self.cgroup.procs_files() if self.cgroup is not None else [],
            "umask": self.umask if confined else None,
            "ignore": [int(s) for s in _SHIELDED] if confined else [],
        }

    def oom_killed(self) -> bool:
        return self.cgroup is not None and self.cgroup.oom_kills() > 0

    def memory_bytes(self) -> int:
        return self.cgroup.memory_bytes() if self.cgroup is not None else 0

    def kill_all(self) -> None:
        """SIGKILL every process of this launch, wherever it went (setsid included)."""
        if self.cgroup is not None:
            self.cgroup.kill()

    def finish(self) -> None:
        """Once the process is reaped: kill leftovers and remove the cgroup."""
        if self.cgroup is not None and not self.cgroup.destroy():
            log.warning("cgroup %s is still busy; left for the next sweep", self.cgroup.dirs)


@dataclass
class Tenancy:
    """A daemon's way to start tenant processes (see the module docstring)."""

    owner: str
    enabled: bool
    hierarchy: Hierarchy | None = None
    host_links: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def for_daemon(cls, owner: str, mode: str = "on", keep: Collection[str] = ()) -> Tenancy:
        """Detect what this host offers; raise TenantError when root lacks a part.

        `mode`: "on" (sandbox when root), "off" (never: development only).
        `keep`: units whose processes a previous run left alive on purpose
        (instances the runner adopts from their shims): spared by the sweep.
        """
        if mode not in ("on", "off"):
            raise TenantError(f"sandbox mode must be 'on' or 'off', not {mode!r}")
        if mode == "off":
            log.warning("SANDBOX OFF: tenant code runs as %s with no limits", _whoami())
            return cls(owner, enabled=False)
        if os.geteuid() != 0:
            log.warning(
                "not root: tenant code runs as %s, unsandboxed and unlimited "
                "(run as root for per-app users, bubblewrap and cgroups)",
                _whoami(),
            )
            return cls(owner, enabled=False)
        for tool, pkg in ((BWRAP, "bubblewrap"), (SETPRIV, "util-linux")):
            if not os.access(tool, os.X_OK):
                raise TenantError(f"{tool} is missing: install {pkg} (apt-get install {pkg})")
        try:
            hierarchy = Hierarchy.detect(owner)
            hierarchy.setup()
        except (CgroupError, OSError) as exc:
            raise TenantError(f"cgroups: {exc}") from None
        t = cls(owner, enabled=True, hierarchy=hierarchy, host_links=system_links())
        t.sweep(keep)
        return t

    def sweep(self, keep: Collection[str] = ()) -> None:
        """Kill and remove cgroups a crashed run of this daemon left behind
        (but those of `keep`, alive and adopted)."""
        if self.hierarchy is None:
            return
        for cg in self.hierarchy.leftovers():
            if any(d.name in keep for d in cg.dirs.values()):
                continue
            if cg.pids():
                log.warning("killing tenant processes left in %s", cg.dirs)
            cg.destroy()

    def close(self) -> None:
        """The daemon is stopping: end what is left, remove our base cgroups."""
        if self.hierarchy is None:
            return
        self.sweep()
        for base in self.hierarchy.bases.values():
            with contextlib.suppress(FileNotFoundError, OSError):
                base.rmdir()

    def prepare(self, spec: TenantSpec, argv: Sequence[str]) -> Prepared:
        if not self.enabled:
            return Prepared(argv=list(argv), identity=None, cgroup=None, limits=spec.limits)
        assert self.hierarchy is not None
        try:
            ensure_identity(spec.identity)
            full = bwrap_argv(spec.sandbox, spec.identity, argv, host_links=self.host_links)
            cg = self.hierarchy.cgroup(spec.unit)
            if cg.pids():
                # Same unit still running (a restart racing its predecessor's
                # cleanup): that process is gone from our books; end it.
                cg.kill()
            cg.create(spec.limits)
        except (IdentityError, SandboxError, CgroupError, OSError) as exc:
            raise TenantError(str(exc)) from None
        return Prepared(
            argv=full, identity=spec.identity, cgroup=cg, limits=spec.limits, umask=spec.umask
        )

    def adopt(self, unit: str, identity: Identity | None, limits: Limits) -> Prepared:
        """The launch of a process a previous run of this daemon started and
        left running (its cgroup `unit`, as that run recorded it)."""
        if not self.enabled or identity is None:
            return Prepared(argv=[], identity=None, cgroup=None, limits=limits)
        assert self.hierarchy is not None
        try:
            cg = self.hierarchy.cgroup(unit)
        except CgroupError as exc:
            raise TenantError(str(exc)) from None
        return Prepared(argv=[], identity=identity, cgroup=cg, limits=limits)


def _whoami() -> str:
    import pwd

    try:
        return pwd.getpwuid(os.geteuid()).pw_name
    except KeyError:
        return f"uid {os.geteuid()}"
