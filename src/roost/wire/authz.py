"""Which role may send which message: one table, checked before any handler runs.

Theory of operation: a CURVE key only proves which (role, host) is speaking
(`roost.wire.identity`). What that identity may ask for is decided here, by
message type alone, from the flow table of docs/architecture.md: a runner
(which runs tenants' code) may heartbeat, ship logs and fetch images, and
nothing else; only a controller may provision or drop a database. The RPC
server (`roost.wire.rpc`) calls `refusal` for every request, so a handler never
sees a message from a role that may not send it. Some messages also make a
claim about their sender (a heartbeat names its host): those claims must be
the sender's own (`_claim_refusal`).

A message type missing from FLOWS is refused from everyone (a new request
type is added here with its senders, or it cannot be used). FLOWS also names
the roles that serve each request: each such role's {message type: handler}
table (`roost.wire.dispatch`) lists exactly those, as tests/wire/test_flows.py
checks. Publications are checked at both ends: a publisher admits only
READERS' roles at the handshake, and a subscriber connects only to keys of
PUBLISHERS' roles.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from roost.wire.identity import ROLES, Identity
from roost.wire.messages import (
    AccountApps,
    AppAccess,
    AppGrant,
    AppKeys,
    AppKeysRequest,
    AppNames,
    AppRemoved,
    Assignment,
    AssignmentReady,
    BackupCapture,
    BackupCaptured,
    BackupEvent,
    BackupHostRestore,
    BackupHostRestored,
    BackupList,
    BackupListRequest,
    BackupPolicySet,
    BackupRestore,
    BackupRestored,
    BackupRestoresRequest,
    BackupRestoresRunning,
    BackupSource,
    BackupSourceRequest,
    BucketArchive,
    BucketCredentials,
    BucketDeprovision,
    BucketProvision,
    BucketPull,
    BucketRemoved,
    BucketRestore,
    BucketRestored,
    BuildAccepted,
    BuildEnv,
    BuildEnvRequest,
    BuildLog,
    BuildLogChunk,
    BuildLogRequest,
    BuildRequest,
    BuildResult,
    DataArchive,
    DataPull,
    DataRestore,
    DataStart,
    DataVersion,
    DataVersionReply,
    DrainedApps,
    Error,
    ExecClose,
    ExecInput,
    ExecOutput,
    ExecPoll,
    ExecResize,
    ExecSignal,
    GatewayDeploy,
    Heartbeat,
    HeartbeatReply,
    HostRestoreApp,
    ImageChunk,
    ImageChunkRequest,
    ImageCopy,
    ImageRetain,
    ImageRetainRequest,
    ImageSources,
    ImageSourcesRequest,
    LogBatch,
    Msg,
    Ok,
    PairJoin,
    PairPlanned,
    PairReplace,
    Ping,
    PlatformSnapshot,
    PlatformSnapshotRequest,
    RedisRestore,
    RepoBundle,
    RepoBundleRequest,
    RepoRestore,
    RetiredHosts,
    RouteDelta,
    RouterLogBatch,
    RouterStats,
    RouteSnapshot,
    RouteSnapshotRequest,
    RunPlacement,
    RunStart,
    RunTarget,
    ServiceBackup,
    ServiceBackupDone,
    ServiceCredentials,
    ServiceDeprovision,
    ServiceHostRestore,
    ServiceHostRestored,
    ServiceHostStatus,
    ServiceHostStatusRequest,
    ServiceProvision,
    ServiceRemoved,
    ServiceRestoreReady,
    ServiceRestoreStep,
    SshAuth,
    SshIdentity,
)


def _by(*roles: str) -> frozenset[str]:
    unknown = set(roles) - set(ROLES)
    assert not unknown, f"unknown roles {unknown}"
    return frozenset(roles)


@dataclass(frozen=True)
class Flow:
    """A request type's flow: the roles that may send it (`by`) and the roles
    that serve it (`to`), whose {message type: handler} tables list it."""

    by: frozenset[str]
    to: frozenset[str]


CONTROLLER = _by("controller")
RUNNER = _by("runner")
BUILDER = _by("builder")
GATEWAY = _by("gateway")
SERVICEHOST = _by("servicehost")
BACKUPD = _by("backupd")
SESSION_OWNERS = _by("controller", "gateway")  # gateways relay `run`; controllers fire cron
SESSION_SERVERS = _by("runner", "servicehost")  # `run` and cron; rsync/scp/sftp
IMAGE_STORES = _by("builder", "runner")  # the builders' stores, runners' copies

# message type -> who may send it as a request, and who serves it
FLOWS: dict[type[Msg], Flow] = {
    Ping: Flow(
        by=frozenset(ROLES), to=_by("controller", "runner", "builder", "servicehost", "backupd")
    ),
    # runner -> every controller
    Heartbeat: Flow(by=RUNNER, to=CONTROLLER),
    LogBatch: Flow(by=RUNNER, to=CONTROLLER),
    # runners' copy stores and builders' stores: which images to keep
    ImageRetainRequest: Flow(by=IMAGE_STORES, to=CONTROLLER),
    # backupd pulls the serving releases' images into the platform's backup
    ImageSourcesRequest: Flow(by=_by("runner", "router", "backupd"), to=CONTROLLER),
    # builder -> controller
    BuildLog: Flow(by=BUILDER, to=CONTROLLER),
    BuildResult: Flow(by=BUILDER, to=CONTROLLER),
    BuildEnvRequest: Flow(by=BUILDER, to=CONTROLLER),
    # controller -> builder
    BuildRequest: Flow(by=CONTROLLER, to=BUILDER),
    # runner/router/backupd -> image stores
    ImageChunkRequest: Flow(by=_by("runner", "router", "backupd"), to=IMAGE_STORES),
    # controller -> runner
    ImageCopy: Flow(by=CONTROLLER, to=RUNNER),
    AssignmentReady: Flow(by=CONTROLLER, to=RUNNER),
    # router -> controller
    RouteSnapshotRequest: Flow(by=_by("router"), to=CONTROLLER),
    RouterStats: Flow(by=_by("router"), to=CONTROLLER),
    RouterLogBatch: Flow(by=_by("router"), to=CONTROLLER),
    # controller -> servicehost, and back
    ServiceProvision: Flow(by=CONTROLLER, to=SERVICEHOST),
    # A lost servicehost's place in its pair taken by another (replace.py).
    PairReplace: Flow(by=CONTROLLER, to=SERVICEHOST),
    PairJoin: Flow(by=CONTROLLER, to=SERVICEHOST),
    ServiceDeprovision: Flow(by=CONTROLLER, to=SERVICEHOST),
    BucketProvision: Flow(by=CONTROLLER, to=SERVICEHOST),
    BucketDeprovision: Flow(by=CONTROLLER, to=SERVICEHOST),
    BucketPull: Flow(by=BACKUPD, to=SERVICEHOST),
    BucketRestore: Flow(by=BACKUPD, to=SERVICEHOST),
    ServiceBackup: Flow(by=CONTROLLER, to=SERVICEHOST),
    ServiceHostStatusRequest: Flow(by=CONTROLLER, to=SERVICEHOST),
    ServiceHostStatus: Flow(by=SERVICEHOST, to=CONTROLLER),
    # gateway -> controller
    SshAuth: Flow(by=GATEWAY, to=CONTROLLER),
    AppAccess: Flow(by=GATEWAY, to=CONTROLLER),
    AccountApps: Flow(by=GATEWAY, to=CONTROLLER),
    GatewayDeploy: Flow(by=GATEWAY, to=CONTROLLER),
    BuildLogRequest: Flow(by=GATEWAY, to=CONTROLLER),
    RunPlacement: Flow(by=GATEWAY, to=CONTROLLER),
    AppKeysRequest: Flow(by=GATEWAY, to=CONTROLLER),
    # controller -> servicehosts and runners
    AppRemoved: Flow(by=CONTROLLER, to=SESSION_SERVERS),
    # exec sessions: gateway/controller -> runner, gateway -> servicehost
    RunStart: Flow(by=SESSION_OWNERS, to=RUNNER),
    DataStart: Flow(by=GATEWAY, to=SERVICEHOST),
    ExecInput: Flow(by=SESSION_OWNERS, to=SESSION_SERVERS),
    ExecResize: Flow(by=SESSION_OWNERS, to=SESSION_SERVERS),
    ExecSignal: Flow(by=SESSION_OWNERS, to=SESSION_SERVERS),
    ExecPoll: Flow(by=SESSION_OWNERS, to=SESSION_SERVERS),
    ExecClose: Flow(by=SESSION_OWNERS, to=SESSION_SERVERS),
    # runner -> servicehost (app data directories)
    DataVersion: Flow(by=_by("runner", "backupd"), to=SERVICEHOST),
    DataPull: Flow(by=_by("runner", "backupd"), to=SERVICEHOST),
    # backupd pulls from what it backs up, and restores into it
    BackupSourceRequest: Flow(by=BACKUPD, to=SERVICEHOST),
    ServiceRestoreStep: Flow(by=BACKUPD, to=SERVICEHOST),
    RedisRestore: Flow(by=BACKUPD, to=SERVICEHOST),
    DataRestore: Flow(by=BACKUPD, to=SERVICEHOST),
    ServiceHostRestore: Flow(by=BACKUPD, to=SERVICEHOST),
    RepoBundleRequest: Flow(by=BACKUPD, to=GATEWAY),
    RepoRestore: Flow(by=BACKUPD, to=GATEWAY),
    PlatformSnapshotRequest: Flow(by=BACKUPD, to=CONTROLLER),
    BackupEvent: Flow(by=BACKUPD, to=CONTROLLER),
    HostRestoreApp: Flow(by=BACKUPD, to=CONTROLLER),
    # controller -> backupd (what `roost backups` asks for)
    BackupCapture: Flow(by=CONTROLLER, to=BACKUPD),
    BackupListRequest: Flow(by=CONTROLLER, to=BACKUPD),
    BackupRestore: Flow(by=CONTROLLER, to=BACKUPD),
    BackupPolicySet: Flow(by=CONTROLLER, to=BACKUPD),
    BackupHostRestore: Flow(by=CONTROLLER, to=BACKUPD),
    BackupRestoresRequest: Flow(by=CONTROLLER, to=BACKUPD),
}
# message type -> the roles that may send it as a request
SENDERS: dict[type[Msg], frozenset[str]] = {kind: f.by for kind, f in FLOWS.items()}


# Replies and publications: never a request, from anyone.
NOT_REQUESTS: frozenset[type[Msg]] = frozenset(
    {
        Ok,
        Error,
        Assignment,
        HeartbeatReply,
        DrainedApps,
        BuildAccepted,
        BuildEnv,
        ImageChunk,
        RouteSnapshot,
        RouteDelta,
        ServiceCredentials,
        ServiceRemoved,
        BucketCredentials,
        BucketRemoved,
        BucketArchive,
        BucketRestored,
        ServiceBackupDone,
        SshIdentity,
        AppNames,
        AppGrant,
        AppKeys,
        BuildLogChunk,
        RunTarget,
        ExecOutput,
        DataVersionReply,
        DataArchive,
        ImageSources,
        ImageRetain,
        BackupSource,
        ServiceRestoreReady,
        RepoBundle,
        PlatformSnapshot,
        BackupCaptured,
        BackupList,
        BackupRestored,
        ServiceHostRestored,
        BackupHostRestored,
        BackupRestoresRunning,
        PairPlanned,
        RetiredHosts,
    }
)

# topic -> the roles that may publish it / subscribe to it. Route tables
# carry TLS private keys: only routers read them.
PUBLISHERS: dict[str, frozenset[str]] = {"routes": CONTROLLER}
READERS: dict[str, frozenset[str]] = {"routes": _by("router")}


def readers_of_any() -> frozenset[str]:
    """The roles a publisher admits: those that read some topic."""
    return frozenset().union(*READERS.values())


def publishers_of(topics: Iterable[str]) -> frozenset[str]:
    """The roles whose publications a subscriber to `topics` may take: those
    that may publish every one of them."""
    roles = frozenset(ROLES)
    for t in topics:
        roles &= PUBLISHERS.get(t, frozenset())
    return roles


def refusal(msg: Msg, caller: Identity, key: str) -> str | None:
    """Why `caller` (holding public key `key`, z85) may not send `msg`; None if it may."""
    name = type(msg).__name__
    roles = SENDERS.get(type(msg))
    if roles is None:
        return f"{name} is not a request (refused from {caller})"
    if caller.role not in roles:
        allowed = ", ".join(sorted(roles))
        return f"a {caller.role} ({caller}) may not send {name}: only {allowed}"
    return _claim_refusal(msg, caller, key)


def _claim_refusal(msg: Msg, caller: Identity, key: str) -> str | None:
    """Claims a message makes about its sender must be the sender's own."""
    if isinstance(msg, Heartbeat):
        if msg.host_id != caller.host:
            return f"{caller} may not heartbeat as host {msg.host_id!r}"
        if msg.rpc_key not in ("", key):
            return f"{caller} may not advertise another key's endpoint"
    if isinstance(msg, ImageRetainRequest):
        if msg.host_id != caller.host:
            return f"{caller} may not speak for the copies of host {msg.host_id!r}"
        # A builder asking as a runner would make the controller forget the
        # copies a runner of the same host name holds.
        if msg.builder != (caller.role == "builder"):
            return f"{caller} may not ask as {'a builder' if msg.builder else 'a runner'}"
    if isinstance(msg, ServiceHostStatus) and msg.host_id not in ("", caller.host):
        # Controllers place apps' data and send requests by this id.
        return f"{caller} may not report as servicehost {msg.host_id!r}"
    # A fence claims the scheduler lease, which only a controller holds: a
    # gateway's fenced `run` would raise the runner's fence above the lease's
    # and get every cron run refused, and would outlive its client unpolled.
    if isinstance(msg, RunStart) and msg.fence and caller.role != "controller":
        return f"{caller} may not send a fenced RunStart: only the lease holder (a controller)"
    return None
