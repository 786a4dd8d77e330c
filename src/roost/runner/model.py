"""The runner's data: what it knows about each instance and image, the events
that change that knowledge, and the actions the planner asks for.

Everything here is plain data. `roost.runner.plan` turns (desired, records,
images, now) into actions; `roost.runner.supervisor` performs them and feeds
what happened back in as events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from roost.wire.messages import InstanceAssignment, InstanceState


@dataclass(frozen=True)
class Policy:
    """Timings of supervision (seconds)."""

    backoff_base_s: float = 0.5
    backoff_max_s: float = 30.0
    # An instance that stayed up this long has its failure count reset, so its
    # next crash restarts quickly again.
    backoff_reset_s: float = 30.0
    # A non-web instance counts as up once it has stayed alive this long.
    settle_s: float = 1.0
    # A web instance must pass its health check within this long (longer when
    # a declared check needs more: plan.startup_limit) or it is failed.
    startup_timeout_s: float = 60.0
    # Between SIGTERM and SIGKILL when stopping.
    stop_grace_s: float = 10.0
    # Longest wait between image fetch attempts.
    image_retry_max_s: float = 30.0
    # A running web instance's declared health check is tried this often.
    health_every_s: float = 10.0


@dataclass
class Record:
    """What the runner knows about one instance it runs (or ran)."""

    assignment: InstanceAssignment
    # "web.1": process type + index within the app on this host (stable for
    # the record's life; used in logs).
    process_name: str
    state: InstanceState = "pending"
    pid: int = 0
    port: int = 0
    unix_socket: str = ""
    command: str = ""
    # Plan-clock (monotonic) times; 0.0 = never.
    started_at: float = 0.0
    up_at: float = 0.0
    next_start_at: float = 0.0
    kill_at: float = 0.0
    # Wall-clock start time for reports.
    started_wall: float = 0.0
    runs: int = 0  # processes started for this record
    restarts: int = 0
    failures: int = 0  # consecutive failures: drives the backoff
    killed: bool = False
    # Set when the runner itself fails the instance (startup timeout): the
    # exit that follows is a crash, not a requested stop.
    fail_reason: str = ""
    last_error: str = ""
    # This run was stopped because it failed its health check (`last_error`
    # says how, once it has exited): the rollout fails at once on it.
    unhealthy: bool = False

    @property
    def instance_id(self) -> str:
        return self.assignment.instance_id

    @property
    def has_process(self) -> bool:
        return self.state in ("starting", "up", "stopping")


@dataclass
class ImageStatus:
    state: str  # "fetching" | "ready" | "failed"
    path: Path | None = None
    failures: int = 0
    retry_at: float = 0.0
    error: str = ""


# ---------------------------------------------------------------- actions


@dataclass(frozen=True)
class Fetch:
    digest: str
    app: str


@dataclass(frozen=True)
class Start:
    instance_id: str


@dataclass(frozen=True)
class MarkUp:
    instance_id: str


@dataclass(frozen=True)
class Stop:
    instance_id: str
    reason: str = ""
    # Non-empty when the runner fails the instance (the exit is then a crash).
    failure: str = ""


@dataclass(frozen=True)
class Kill:
    instance_id: str


@dataclass(frozen=True)
class Forget:
    instance_id: str


@dataclass(frozen=True)
class Starts:
    """Starts next to each other in one plan, done at once: each waits for
    its shim to start its process (~50 ms, more on a busy host), and a
    release's instances then started one after another."""

    starts: tuple[Start, ...]


Action = Fetch | Start | Starts | MarkUp | Stop | Kill | Forget


# ---------------------------------------------------------------- events


@dataclass(frozen=True)
class DesiredChanged:
    instances: list[InstanceAssignment]


@dataclass(frozen=True)
class Exited:
    instance_id: str
    pid: int
    returncode: int | None
    output_tail: list[str] = field(default_factory=list)
    # Why it ended, when the exit status alone does not say: it could not
    # even be started, or the kernel OOM-killed it in its cgroup.
    error: str = ""


@dataclass(frozen=True)
class Ready:
    instance_id: str
    pid: int


@dataclass(frozen=True)
class Unhealthy:
    """The health check of process `pid` failed: `failure` is its last answer."""

    instance_id: str
    pid: int
    failure: str


@dataclass(frozen=True)
class ImageReady:
    digest: str
    path: Path


@dataclass(frozen=True)
class ImageFailed:
    digest: str
    error: str
    # Fetched, but this host cannot run it (roost.runner.interpcheck).
    unusable: bool = False


@dataclass(frozen=True)
class Shutdown:
    pass


@dataclass(frozen=True)
class Handover:
    """Exit and leave every instance running for a successor (SIGUSR2)."""


@dataclass(frozen=True)
class Adopted:
    """These records' instances were left running by a previous runner: watch them."""

    instance_ids: tuple[str, ...]


Event = (
    DesiredChanged
    | Exited
    | Ready
    | Unhealthy
    | ImageReady
    | ImageFailed
    | Shutdown
    | Handover
    | Adopted
)
