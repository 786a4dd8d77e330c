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

A message type missing from SENDERS is refused from everyone (a new request
type is added here with its senders, or it cannot be used). Publications are
checked at both ends: a publisher admits only READERS' roles at the handshake,
and a subscriber connects only to keys of PUBLISHERS' roles.
"""

from __future__ import annotations

from collections.abc import Iterable

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
    BuildAccepted,
    BuildLog,
    BuildLogChunk,
    BuildLogRequest,
    BuildRequest,
    BuildResult,
    DataArchive,
    DataPull,
    DataStart,
    DataVersion,
    DataVersionReply,
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
    ImageChunk,
    ImageChunkRequest,
    ImageReplicate,
    ImageRetain,
    ImageRetainRequest,
    ImageSources,
    ImageSourcesRequest,
    LogBatch,
    Msg,
    Ok,
    Ping,
    RouteDelta,
    RouteSnapshot,
    RouteSnapshotRequest,
    RunPlacement,
    RunStart,
    RunTarget,
    ServiceBackup,
    ServiceBackupDone,
    ServiceCredentials,
    ServiceDeprovision,
    ServiceHostStatus,
    ServiceHostStatusRequest,
    ServiceProvision,
    ServiceRemoved,
    SshAuth,
    SshIdentity,
)


def _by(*roles: str) -> frozenset[str]:
    unknown = set(roles) - set(ROLES)
    assert not unknown, f"unknown roles {unknown}"
    return frozenset(roles)


CONTROLLER = _by("controller")
RUNNER = _by("runner")
BUILDER = _by("builder")
GATEWAY = _by("gateway")
SESSION_OWNERS = _by("controller", "gateway")  # gateways relay `run`; controllers fire cron

# message type -> the roles that may send it as a request
SENDERS: dict[type[Msg], frozenset[str]] = {
    Ping: frozenset(ROLES),
    # runner -> every controller
    Heartbeat: RUNNER,
    LogBatch: RUNNER,
    ImageRetainRequest: RUNNER,
    ImageSourcesRequest: _by("runner", "router"),
    # builder -> controller
    BuildLog: BUILDER,
    BuildResult: BUILDER,
    # controller -> builder
    BuildRequest: CONTROLLER,
    # runner/router -> image stores (builders, runners' replicas)
    ImageChunkRequest: _by("runner", "router"),
    # controller -> runner
    ImageReplicate: CONTROLLER,
    # router -> controller
    RouteSnapshotRequest: _by("router"),
    # controller -> servicehost, and back
    ServiceProvision: CONTROLLER,
    ServiceDeprovision: CONTROLLER,
    ServiceBackup: CONTROLLER,
    ServiceHostStatusRequest: CONTROLLER,
    ServiceHostStatus: _by("servicehost"),
    # gateway -> controller
    SshAuth: GATEWAY,
    AppAccess: GATEWAY,
    AccountApps: GATEWAY,
    GatewayDeploy: GATEWAY,
    BuildLogRequest: GATEWAY,
    RunPlacement: GATEWAY,
    AppKeysRequest: GATEWAY,
    # controller -> servicehosts and runners
    AppRemoved: CONTROLLER,
    # exec sessions: gateway/controller -> runner, gateway -> servicehost
    RunStart: SESSION_OWNERS,
    DataStart: GATEWAY,
    ExecInput: SESSION_OWNERS,
    ExecResize: SESSION_OWNERS,
    ExecSignal: SESSION_OWNERS,
    ExecPoll: SESSION_OWNERS,
    ExecClose: SESSION_OWNERS,
    # runner -> servicehost (app data directories)
    DataVersion: RUNNER,
    DataPull: RUNNER,
}

# Replies and publications: never a request, from anyone.
NOT_REQUESTS: frozenset[type[Msg]] = frozenset(
    {
        Ok,
        Error,
        Assignment,
        HeartbeatReply,
        BuildAccepted,
        ImageChunk,
        RouteSnapshot,
        RouteDelta,
        ServiceCredentials,
        ServiceRemoved,
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
    if isinstance(msg, ImageRetainRequest) and msg.host_id != caller.host:
        return f"{caller} may not speak for the replicas of host {msg.host_id!r}"
    return None
