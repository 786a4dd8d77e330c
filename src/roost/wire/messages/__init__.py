"""Every message that crosses a ZeroMQ socket between Roost daemons.

Messages are msgspec Structs tagged by class name, so one decoder takes any of
them and a malformed frame is a `msgspec.ValidationError`/`DecodeError`, which
the transports log and drop. Shared types used by several roles live here (or in
`roost.appspec`), never in a role's own package. One module per conversation
(runners, builds, images, routes, services, gateway, sessions, datadirs,
backups); every role imports them from here.
"""

from __future__ import annotations

from roost.wire.messages.backups import (
    APP_SUSPENDED,
    BackupCapture,
    BackupCaptured,
    BackupEntry,
    BackupEvent,
    BackupHostRestore,
    BackupHostRestored,
    BackupKind,
    BackupList,
    BackupListRequest,
    BackupPolicySet,
    BackupRestore,
    BackupRestored,
    BackupRestoresRequest,
    BackupRestoresRunning,
    BackupSource,
    BackupSourceRequest,
    BackupState,
    DataRestore,
    HostRestoreApp,
    HostRestoreReport,
    PairJoin,
    PairPlanned,
    PairReplace,
    PgSource,
    PlatformSnapshot,
    PlatformSnapshotRequest,
    RedisRestore,
    RedisSource,
    RepoBundle,
    RepoBundleRequest,
    RepoRestore,
    ServiceHostRestore,
    ServiceHostRestored,
    ServiceRestoreReady,
    ServiceRestoreStep,
)
from roost.wire.messages.base import (
    Error,
    InstanceState,
    Msg,
    Ok,
    Ping,
)
from roost.wire.messages.builds import (
    BuildAccepted,
    BuildEnv,
    BuildEnvRequest,
    BuildLog,
    BuildRequest,
    BuildResult,
)
from roost.wire.messages.datadirs import (
    DataArchive,
    DataPull,
    DataVersion,
    DataVersionReply,
)
from roost.wire.messages.gateway import (
    AccountApps,
    AppAccess,
    AppGrant,
    AppKeys,
    AppKeysRequest,
    AppNames,
    BuildLogChunk,
    BuildLogRequest,
    GatewayDeploy,
    RunPlacement,
    RunTarget,
    SshAuth,
    SshIdentity,
)
from roost.wire.messages.images import (
    ImageChunk,
    ImageChunkRequest,
    ImageCopy,
    ImageRetain,
    ImageRetainRequest,
    ImageSource,
    ImageSources,
    ImageSourcesRequest,
)
from roost.wire.messages.routes import (
    AppRoute,
    Backend,
    RouteDelta,
    RouterStats,
    RouteSnapshot,
    RouteSnapshotRequest,
    StaticRoute,
    TlsCertificate,
)
from roost.wire.messages.runners import (
    DATA_PROXY_HOST,
    MAX_LOG_LINE,
    AppRemoved,
    Assignment,
    AssignmentReady,
    DrainedApps,
    Heartbeat,
    HeartbeatReply,
    InstanceAssignment,
    InstanceStatus,
    LogBatch,
    LogLine,
    ProxyTarget,
    RouterLogBatch,
)
from roost.wire.messages.services import (
    RUNNER_S3_HOST,
    BucketArchive,
    BucketCredentials,
    BucketDeprovision,
    BucketProvision,
    BucketPull,
    BucketRemoved,
    BucketRestore,
    BucketRestored,
    DataUse,
    KeptCopy,
    RedisCopy,
    RetiredHosts,
    ServerState,
    ServerStatus,
    ServiceBackup,
    ServiceBackupDone,
    ServiceCredentials,
    ServiceDeprovision,
    ServiceHostStatus,
    ServiceHostStatusRequest,
    ServiceKind,
    ServiceProvision,
    ServiceRemoved,
)
from roost.wire.messages.sessions import (
    DataStart,
    ExecChunk,
    ExecClose,
    ExecInput,
    ExecOutput,
    ExecPoll,
    ExecResize,
    ExecSignal,
    RunStart,
)

AnyMsg = (
    AppRemoved
    | AppGrant
    | AppKeysRequest
    | AppKeys
    | AssignmentReady
    | ImageCopy
    | ImageSourcesRequest
    | ImageSources
    | ImageRetainRequest
    | ImageRetain
    | Ok
    | Error
    | Ping
    | Assignment
    | Heartbeat
    | HeartbeatReply
    | LogBatch
    | RouterLogBatch
    | DrainedApps
    | BuildRequest
    | BuildAccepted
    | BuildLog
    | BuildResult
    | BuildEnvRequest
    | BuildEnv
    | ImageChunkRequest
    | ImageChunk
    | RouteSnapshot
    | RouteDelta
    | RouteSnapshotRequest
    | RouterStats
    | ServiceProvision
    | ServiceCredentials
    | ServiceDeprovision
    | ServiceRemoved
    | BucketProvision
    | BucketCredentials
    | BucketDeprovision
    | BucketRemoved
    | BucketPull
    | BucketArchive
    | BucketRestore
    | BucketRestored
    | ServiceBackup
    | ServiceBackupDone
    | ServiceHostStatusRequest
    | ServiceHostStatus
    | RetiredHosts
    | SshAuth
    | SshIdentity
    | AppAccess
    | AccountApps
    | AppNames
    | GatewayDeploy
    | BuildLogRequest
    | BuildLogChunk
    | RunPlacement
    | RunTarget
    | RunStart
    | DataStart
    | ExecInput
    | ExecResize
    | ExecSignal
    | ExecPoll
    | ExecOutput
    | ExecClose
    | DataVersion
    | DataVersionReply
    | DataPull
    | DataArchive
    | BackupSourceRequest
    | BackupSource
    | ServiceRestoreStep
    | ServiceRestoreReady
    | RedisRestore
    | DataRestore
    | RepoBundleRequest
    | RepoBundle
    | RepoRestore
    | PlatformSnapshotRequest
    | PlatformSnapshot
    | BackupCapture
    | BackupCaptured
    | BackupListRequest
    | BackupList
    | BackupRestore
    | BackupRestored
    | BackupPolicySet
    | BackupEvent
    | ServiceHostRestore
    | ServiceHostRestored
    | BackupHostRestore
    | BackupHostRestored
    | HostRestoreApp
    | BackupRestoresRequest
    | BackupRestoresRunning
    | PairReplace
    | PairPlanned
    | PairJoin
)

__all__ = [
    "APP_SUSPENDED",
    "DATA_PROXY_HOST",
    "MAX_LOG_LINE",
    "RUNNER_S3_HOST",
    "AccountApps",
    "AnyMsg",
    "AppAccess",
    "AppGrant",
    "AppKeys",
    "AppKeysRequest",
    "AppNames",
    "AppRemoved",
    "AppRoute",
    "Assignment",
    "AssignmentReady",
    "Backend",
    "BackupCapture",
    "BackupCaptured",
    "BackupEntry",
    "BackupEvent",
    "BackupHostRestore",
    "BackupHostRestored",
    "BackupKind",
    "BackupList",
    "BackupListRequest",
    "BackupPolicySet",
    "BackupRestore",
    "BackupRestored",
    "BackupRestoresRequest",
    "BackupRestoresRunning",
    "BackupSource",
    "BackupSourceRequest",
    "BackupState",
    "BucketArchive",
    "BucketCredentials",
    "BucketDeprovision",
    "BucketProvision",
    "BucketPull",
    "BucketRemoved",
    "BucketRestore",
    "BucketRestored",
    "BuildAccepted",
    "BuildEnv",
    "BuildEnvRequest",
    "BuildLog",
    "BuildLogChunk",
    "BuildLogRequest",
    "BuildRequest",
    "BuildResult",
    "DataArchive",
    "DataPull",
    "DataRestore",
    "DataStart",
    "DataUse",
    "DataVersion",
    "DataVersionReply",
    "DrainedApps",
    "Error",
    "ExecChunk",
    "ExecClose",
    "ExecInput",
    "ExecOutput",
    "ExecPoll",
    "ExecResize",
    "ExecSignal",
    "GatewayDeploy",
    "Heartbeat",
    "HeartbeatReply",
    "HostRestoreApp",
    "HostRestoreReport",
    "ImageChunk",
    "ImageChunkRequest",
    "ImageCopy",
    "ImageRetain",
    "ImageRetainRequest",
    "ImageSource",
    "ImageSources",
    "ImageSourcesRequest",
    "InstanceAssignment",
    "InstanceState",
    "InstanceStatus",
    "KeptCopy",
    "LogBatch",
    "LogLine",
    "Msg",
    "Ok",
    "PairJoin",
    "PairPlanned",
    "PairReplace",
    "PgSource",
    "Ping",
    "PlatformSnapshot",
    "PlatformSnapshotRequest",
    "ProxyTarget",
    "RedisCopy",
    "RedisRestore",
    "RedisSource",
    "RepoBundle",
    "RepoBundleRequest",
    "RepoRestore",
    "RetiredHosts",
    "RouteDelta",
    "RouteSnapshot",
    "RouteSnapshotRequest",
    "RouterLogBatch",
    "RouterStats",
    "RunPlacement",
    "RunStart",
    "RunTarget",
    "ServerState",
    "ServerStatus",
    "ServiceBackup",
    "ServiceBackupDone",
    "ServiceCredentials",
    "ServiceDeprovision",
    "ServiceHostRestore",
    "ServiceHostRestored",
    "ServiceHostStatus",
    "ServiceHostStatusRequest",
    "ServiceKind",
    "ServiceProvision",
    "ServiceRemoved",
    "ServiceRestoreReady",
    "ServiceRestoreStep",
    "SshAuth",
    "SshIdentity",
    "StaticRoute",
    "TlsCertificate",
]
