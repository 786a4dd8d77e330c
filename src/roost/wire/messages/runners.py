"""Controller <-> runner: assignments, heartbeats, logs, hints.

Part of `roost.wire.messages`, which every role imports them from.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from roost.appspec.model import AppSpec
from roost.wire.messages.base import InstanceState, Msg

# ---------------------------------------------------------------- runners


class InstanceAssignment(msgspec.Struct, frozen=True, kw_only=True):
    """One instance a runner must run. Identity is `instance_id`."""

    instance_id: str
    app: str
    release: int
    image_digest: str
    process_type: str
    spec: AppSpec
    env: dict[str, str] = {}
    # This incarnation of the app name (roost.wire.messages.AppRemoved): the
    # runner keys the app's directories by it, so a reused name never finds
    # a deleted app's files. "" from an older controller: no check.
    app_key: str = ""
    # The app's numeric id: its tenant uid is derived from it
    # (roost.tenant.identity), the same on every host. 0 only from a
    # controller older than tenant isolation; runners refuse to start it.
    app_id: int = 0
    # The instance's memory limit (its cgroup's); 0: the runner's default.
    memory_mb: int = 0
    # What the runner's data proxy must serve for this app (its services on
    # a servicehost pair: the address its credentials name); [] when none
    # or from an older controller.
    data_proxy: list[ProxyTarget] = []
    # The app's own data quota in MiB (`roost data quota`, issue 17); 0: the
    # runner's ROOST_DATA_QUOTA_MB, as from an older controller.
    data_quota_mb: int = 0


# Where every runner's data proxy listens, the same on every runner (an app's
# credentials name it): a loopback address of its own, so a runner's host
# that is also a servicehost keeps 127.0.0.1's ports (an app's Redis, on the
# same port as its listener) to itself. Tenant processes share the host's
# network; the runner's firewall lets each app reach its own listeners only.
DATA_PROXY_HOST = "127.0.0.2"


class ProxyTarget(msgspec.Struct, frozen=True, kw_only=True):
    """One listener of the runner-local data proxy (roost.runner.dataproxy):
    `local_port` on the runner's proxy address, forwarded to whichever of
    `servers` (host, port, check port) its check calls the primary."""

    kind: Literal["postgres", "redis"]
    name: str  # the pair's (postgres) or the app's (redis)
    local_port: int
    servers: list[tuple[str, int, int]] = []
    password: str = ""  # redis: the AUTH its check sends


class Assignment(Msg, frozen=True, kw_only=True):
    """The full set of instances a host must run (declarative, never a delta).

    `fence` is the scheduler lease's fencing token: a runner refuses an
    assignment whose fence is lower than the highest it has seen. `version`
    orders assignments from the same lease holder.
    """

    host_id: str
    fence: int
    version: int
    instances: list[InstanceAssignment] = []


class InstanceStatus(msgspec.Struct, frozen=True, kw_only=True):
    instance_id: str
    app: str
    release: int
    process_type: str
    state: InstanceState
    pid: int = 0
    port: int = 0
    unix_socket: str = ""
    memory_mb: float = 0.0
    restarts: int = 0
    started_at: float = 0.0
    command: str = ""
    last_error: str = ""
    # Its last run failed its health check (`last_error` is the check's last
    # answer), so its release fails without waiting for a second crash.
    unhealthy: bool = False
    # CPU time (user + system) its process tree has used, in seconds: the
    # controller charts its rate (roost.controller.history); 0 from runners
    # older than the charts.
    cpu_seconds: float = 0.0


class Heartbeat(Msg, frozen=True, kw_only=True):
    host_id: str
    hostname: str
    addresses: list[str] = []
    memory_mb: int = 0
    cpus: int = 0
    instances: list[InstanceStatus] = []
    # The assignment the runner is converging to (fence, version); lets the
    # controller send a new one only when it differs.
    fence: int = 0
    version: int = 0
    sent_at: float = 0.0
    # The runner's own RPC server (exec sessions for `run`), and its CURVE
    # public key (z85 text); "" when it serves none.
    rpc_endpoint: str = ""
    rpc_key: str = ""
    # The runner's Roost release (roost.__version__); "" from 0.1.0, which
    # sent none. `roost cluster upgrade` waits for a replaced host's new one.
    release: str = ""


class HeartbeatReply(Msg, frozen=True, kw_only=True):
    assignment: Assignment | None = None


# The longest log line kept whole, in bytes: a longer one is cut into pieces
# of this size wherever output is cut into lines (an instance's pipes on the
# runner, a cron job's or release command's output on the controller), so one
# line reads the same whichever way it was run.
MAX_LOG_LINE = 16 * 1024


class LogLine(msgspec.Struct, frozen=True, kw_only=True):
    app: str
    ts: float
    source: str  # "app", "build", "router", "platform"
    process: str = ""  # "web.1", "worker.2", build id
    stream: str = "stdout"
    line: str
    # The runner's instance that wrote the line ("" for non-instance sources).
    instance_id: str = ""


class LogBatch(Msg, frozen=True, kw_only=True):
    lines: list[LogLine]


class RouterLogBatch(Msg, frozen=True, kw_only=True):
    """router -> one controller: access lines (source "router") of apps that
    have log drains, for their drains only (roost.router.accesstail)."""

    lines: list[LogLine] = []


class DrainedApps(Msg, frozen=True, kw_only=True):
    """The answer to a RouterLogBatch: the apps whose access lines a router
    should send (those with log drains)."""

    apps: list[str] = []


class AppRemoved(Msg, frozen=True, kw_only=True):
    """Controller -> servicehosts and runners: the app `app` whose incarnation
    is `app_key` was deleted. Its directories on the host move into the
    host's archive (kept ROOST_ARCHIVE_DAYS for an operator, then removed),
    so a new app of the same name starts empty. Idempotent.

    An app key is "<app id>-<creation time in ms>": ids alone may come back
    (SQLite reuses the highest rowid once it is deleted).
    """

    app: str
    app_key: str


class AssignmentReady(Msg, frozen=True, kw_only=True):
    """Controller -> runner: the scheduler lease holder has assignment
    (fence, version) for this host; heartbeat now rather than at the next
    period. A hint only: the assignment still comes in a heartbeat reply,
    judged by its fence as ever, so a stale or forged hint costs one beat."""

    fence: int
    version: int
