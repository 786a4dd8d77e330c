"""Every message that crosses a ZeroMQ socket between Roost daemons.

Messages are msgspec Structs tagged by class name, so one decoder takes any of
them and a malformed frame is a `msgspec.ValidationError`/`DecodeError`, which
the transports log and drop. Shared types used by several roles live here (or in
`roost.appspec`), never in a role's own package.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from roost.appspec.model import AppSpec

InstanceState = Literal["pending", "starting", "up", "crashed", "backoff", "stopping", "stopped"]


class Msg(msgspec.Struct, frozen=True, kw_only=True, tag=True):
    """Base of every wire message (tagged by class name).

    msgspec does not carry `kw_only` over to subclasses, so every message
    declares `class X(Msg, frozen=True, kw_only=True)` itself.
    """


# ---------------------------------------------------------------- generic replies


class Ok(Msg, frozen=True, kw_only=True):
    detail: str = ""


class Error(Msg, frozen=True, kw_only=True):
    message: str
    retryable: bool = False


class Ping(Msg, frozen=True, kw_only=True):
    pass


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


# ---------------------------------------------------------------- builders


class BuildRequest(Msg, frozen=True, kw_only=True):
    build_id: str
    app: str
    # The uploaded source archive (tar.gz).
    archive: bytes
    # Digest of the previous release's lock, to reuse its dependency layer.
    previous_lock: str = ""
    # The previous release's lock text (BuildResult.lock). When the app's
    # requirements are unchanged the builder reuses this pinned resolution
    # (and so the dependency layer) instead of resolving again.
    previous_lock_text: str = ""
    # The app's numeric id: its build steps run as the app's own build user
    # (roost.tenant.identity). 0 from an older controller: the shared one.
    app_id: int = 0


class BuildAccepted(Msg, frozen=True, kw_only=True):
    build_id: str


class BuildLog(Msg, frozen=True, kw_only=True):
    build_id: str
    app: str
    lines: list[str]


class BuildResult(Msg, frozen=True, kw_only=True):
    build_id: str
    app: str
    ok: bool
    error: str = ""
    image_digest: str = ""
    image_size: int = 0
    static_digest: str = ""
    lock: str = ""
    spec: AppSpec | None = None
    duration_s: float = 0.0
    # sha256 of `lock` ("sha256:<hex>"): what BuildRequest.previous_lock names.
    lock_digest: str = ""
    # URL prefix -> path inside the static bundle (`static_digest`); the
    # controller copies these into AppRoute.static.
    static_routes: list[StaticRoute] = []


class BuildEnvRequest(Msg, frozen=True, kw_only=True):
    """A builder asks, once the app's configuration is read, for what the
    steps running the app's code see (the import check, collectstatic): the
    controller provisions the services `spec` declares that the app lacks
    and answers for the app of `build_id` alone, while it is building."""

    build_id: str
    spec: AppSpec


class BuildEnv(Msg, frozen=True, kw_only=True):
    """The build's environment: config vars and service credentials
    (DATABASE_URL, REDIS_URL), as an instance of the app gets them; the
    builder renders bundle_config.py from it. CURVE-encrypted on the wire."""

    build_id: str
    env: dict[str, str] = {}


# ---------------------------------------------------------------- image store


class ImageChunkRequest(Msg, frozen=True, kw_only=True):
    digest: str
    offset: int = 0
    length: int = 1 << 20


class ImageChunk(Msg, frozen=True, kw_only=True):
    digest: str
    offset: int
    total: int
    data: bytes


# ---------------------------------------------------------------- routes


class Backend(msgspec.Struct, frozen=True, kw_only=True):
    instance_id: str
    host: str
    port: int
    unix_socket: str = ""
    host_id: str = ""


class StaticRoute(msgspec.Struct, frozen=True, kw_only=True):
    url_prefix: str
    # Path inside the app's static bundle (AppRoute.static_bundle), which the
    # router fetches by digest from the image store and unpacks locally.
    path: str
    is_file: bool = False
    directory_indexes: bool = False


class AppRoute(msgspec.Struct, frozen=True, kw_only=True):
    app: str
    hostnames: list[str]
    backends: list[Backend] = []
    release: int = 0
    suspended: bool = False
    static: list[StaticRoute] = []
    static_bundle: str = ""  # digest of the static bundle, "" when none
    gzip: bool = False
    expires: dict[str, int] = {}
    basic_auth: dict[str, str] = {}
    basic_auth_realm: str = ""
    # TLS certificates for this app's custom domains (the router terminates TLS).
    certificates: list[TlsCertificate] = []
    # Pending ACME HTTP-01 answers for its domains: token -> key authorization,
    # served at /.well-known/acme-challenge/TOKEN before anything else.
    acme_challenges: dict[str, str] = {}


class RouteSnapshot(Msg, frozen=True, kw_only=True):
    version: int
    routes: list[AppRoute]
    fence: int = 0


class RouteDelta(Msg, frozen=True, kw_only=True):
    """Changes from `base_version` to `version`; applies only on top of base."""

    base_version: int
    version: int
    upserts: list[AppRoute] = []
    removals: list[str] = []
    fence: int = 0


class RouteSnapshotRequest(Msg, frozen=True, kw_only=True):
    pass


class RouterStats(Msg, frozen=True, kw_only=True):
    """A router worker's request counters since it started, sent to every
    controller every few seconds for the dashboard's charts. Cumulative, so
    a lost report loses nothing: the next one carries it."""

    source: str  # router name and worker index: whose counters these are
    started: float  # the worker's start (wall clock): a new one restarts from 0
    # app -> requests answered by status class: [1xx, 2xx, 3xx, 4xx, 5xx]
    requests: dict[str, list[int]] = {}
    # app -> requests per latency bucket (roost.router.stats.BUCKETS), not cumulative
    latency: dict[str, list[int]] = {}


class TlsCertificate(msgspec.Struct, frozen=True, kw_only=True):
    """A certificate chain and its private key (PEM) for some hostnames.

    Routers pick it by SNI for any hostname listed (exact, or `*.example.com`);
    hostnames without one get the router's default (self-signed) certificate.
    """

    hostnames: list[str]
    cert_pem: str
    key_pem: str


# ---------------------------------------------------------------- services (servicehost)

ServiceKind = Literal["postgres", "redis"]
ServerState = Literal["starting", "up", "backoff", "stopping", "stopped"]


class RedisCopy(msgspec.Struct, frozen=True, kw_only=True):
    """What the other servicehost of a pair needs to run an app's Redis as
    the replica of this one: the same port and passwords (either copy may
    become master), and the master's address now."""

    port: int
    memory_mb: int
    password: str
    admin_password: str
    backup_password: str
    replica_password: str
    master_host: str


class ServiceProvision(Msg, frozen=True, kw_only=True):
    """Create (or return the existing) `kind` service of `app`; idempotent.

    `memory_mb` is Redis's maxmemory (0 = the servicehost's default); asking
    again with another value changes the limit of the running server.
    `copy_of`: a Redis pair's second copy, the replica of the one whose
    provision answered it (ServiceCredentials.copy).
    """

    app: str
    kind: ServiceKind
    memory_mb: int = 0
    copy_of: RedisCopy | None = None


class ServiceCredentials(Msg, frozen=True, kw_only=True):
    app: str
    kind: ServiceKind
    host: str
    port: int
    database: str = ""  # postgres: database name; redis: "0"
    username: str = ""  # "" for redis (the default user)
    password: str
    url: str  # DATABASE_URL / REDIS_URL
    # A Redis on a servicehost of a pair: what its partner's provision needs
    # (ServiceProvision.copy_of). Secrets: passed on, never stored.
    copy: RedisCopy | None = None


class ServiceDeprovision(Msg, frozen=True, kw_only=True):
    """Back the service up one last time, then drop its data (idempotent)."""

    app: str
    kind: ServiceKind


class ServiceRemoved(Msg, frozen=True, kw_only=True):
    app: str
    kind: ServiceKind
    # The final backup ("" when there was nothing to remove).
    backup_path: str = ""


class ServiceBackup(Msg, frozen=True, kw_only=True):
    app: str
    kind: ServiceKind


class ServiceBackupDone(Msg, frozen=True, kw_only=True):
    path: str
    size: int


class ServiceHostStatusRequest(Msg, frozen=True, kw_only=True):
    pass


class ServerStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One server. The PostgreSQL cluster itself is app "" / kind "postgres";
    each app's database is a row of its own (its cluster's state, port and pid,
    and the database's size); each Redis server is one row.
    """

    app: str
    kind: ServiceKind
    state: ServerState
    port: int = 0
    pid: int = 0
    disk_bytes: int = 0
    restarts: int = 0
    last_error: str = ""
    # An app's database: its role's CONNECTION LIMIT and the sessions it holds.
    connection_limit: int = 0
    connections: int = 0
    # An app's Redis: maxmemory, memory in use (bytes), its eviction policy.
    memory_limit_bytes: int = 0
    memory_used_bytes: int = 0
    eviction_policy: str = ""
    # An app's Redis: why its snapshots (RDB saves, AOF rewrites) are off
    # ("" while they are on): one would not fit on the disk.
    snapshot_problem: str = ""
    # An app's Redis in a pair: "master" or "replica" ("" alone), the other
    # copy ("host:port"), how far the replica is behind (bytes of stream),
    # and what is wrong with the replication ("" when nothing is).
    redis_role: str = ""
    redis_peer: str = ""
    redis_lag_bytes: int = 0
    redis_problem: str = ""


class KeptCopy(msgspec.Struct, frozen=True, kw_only=True):
    """Data a restore replaced, kept until it is purged (ROOST_ARCHIVE_DAYS)."""

    app: str
    kind: Literal["postgres", "redis", "data"]
    name: str  # the database, or the directory, it is kept in
    kept_at: float


class DataUse(msgspec.Struct, frozen=True, kw_only=True):
    """An app's data directory with a quota (roost.datadir.quota): bytes
    stored, and the most it may store."""

    app: str
    used_bytes: int
    quota_bytes: int


class ServiceHostStatus(Msg, frozen=True, kw_only=True):
    servers: list[ServerStatus] = []
    data: list[DataUse] = []
    disk_free_bytes: int = 0
    disk_total_bytes: int = 0
    # Who sent it (key name) and when (unix time): pushed to the controllers.
    host: str = ""
    sent_at: float = 0.0
    kept: list[KeptCopy] = []
    # The servicehost's host id: the host of its identity, unique in a
    # cluster (its key name is "servicehost" on every host). The controller
    # records it as the holder of what it provisions there. "" from older
    # servicehosts (then `host` stands in).
    host_id: str = ""


class RetiredHosts(Msg, frozen=True, kw_only=True):
    """A controller's answer to a ServiceHostStatus push when servicehosts
    have been replaced for good (controller/retired.py): their addresses,
    whose sentinels no servicehost asks or counts any more. `replaced_by`
    is set when the sender is one of them: it no longer belongs to the
    platform, its push is not taken, and it stops serving its old pair's
    copies (servicehost/retirement.py). A controller with none retired
    answers Ok, which older servicehosts expect."""

    addresses: list[str]
    replaced_by: str = ""


# ---------------------------------------------------------------- gateway (SSH)


class SshAuth(Msg, frozen=True, kw_only=True):
    """Who owns this SSH key? (OpenSSH SHA256 fingerprint, "SHA256:...")."""

    fingerprint: str


class SshIdentity(Msg, frozen=True, kw_only=True):
    account_id: int
    email: str


class AppAccess(Msg, frozen=True, kw_only=True):
    """May `account_id` use `app`? Ok, or Error naming why not."""

    account_id: int
    app: str


class AccountApps(Msg, frozen=True, kw_only=True):
    account_id: int


class AppNames(Msg, frozen=True, kw_only=True):
    apps: list[str] = []
    ids: dict[str, int] = {}  # each app's numeric id (its data's owner)
    data_quotas: dict[str, int] = {}  # each app's own data quota in MiB, where set


class AppGrant(Msg, frozen=True, kw_only=True):
    """The answer to AppAccess when the account may use the app: which
    incarnation of the name it is (the key of the gateway's git cache)."""

    app: str
    app_key: str
    app_id: int = 0
    # The app's own data quota in MiB (0: the platform's), for the data
    # sessions the gateway starts on the servicehost (DataStart).
    data_quota_mb: int = 0


class AppKeysRequest(Msg, frozen=True, kw_only=True):
    """Gateway -> controller: the current key of each of these app names
    (for the caches it keeps: those of deleted apps are archived)."""

    apps: list[str] = []


class AppKeys(Msg, frozen=True, kw_only=True):
    # app -> its current key; a name that is not an app now is left out.
    keys: dict[str, str] = {}


class GatewayDeploy(Msg, frozen=True, kw_only=True):
    """Build `archive` (tar.gz of a pushed commit) as `app`; idempotent per build_id."""

    account_id: int
    app: str
    build_id: str
    archive: bytes


class BuildLogRequest(Msg, frozen=True, kw_only=True):
    account_id: int
    build_id: str
    after_id: int = 0


class BuildLogChunk(Msg, frozen=True, kw_only=True):
    build_id: str
    lines: list[str] = []
    next_after: int = 0
    # The deploy's stage (roost.controller.deployflow): building, provisioning,
    # copying, releasing, rolling-out; at the end live, failed or rolled-back.
    status: str = ""
    error: str = ""
    release: int = 0
    # Once the deploy ended: whether it went live, and the line a user reads
    # ("v4 is live", "rolled back: v3 keeps serving; ...", "failed: ...").
    final: bool = False
    live: bool = False
    outcome: str = ""


class RunPlacement(Msg, frozen=True, kw_only=True):
    """Where may `account_id` run a command in `app`'s current release?"""

    account_id: int
    app: str


class RunTarget(Msg, frozen=True, kw_only=True):
    host_id: str
    endpoint: str
    public_key: str
    # The release environment: image, spec, config vars and service credentials.
    assignment: InstanceAssignment


# ---------------------------------------------------------------- exec sessions
#
# A byte-stream session with a process on a runner (`run`) or a servicehost
# (rsync/scp/sftp on an app's data directory), relayed by a gateway. Every
# request is idempotent, so the RpcClient's retries are harmless: input carries
# its offset in the input stream; output is numbered and stays buffered until a
# poll acknowledges it; a session nobody polls for a while is killed.


class RunStart(Msg, frozen=True, kw_only=True):
    """Start `command` (a shell command line) in the assignment's environment.

    kind "shell": `/bin/sh -c command` (an interactive shell when empty);
    kind "django": `django-admin command` (or `python manage.py command` in
    the [django] base when it has a manage.py).
    """

    session: str
    assignment: InstanceAssignment
    command: str = ""
    kind: Literal["shell", "django"] = "shell"
    pty: bool = False
    term: str = ""
    rows: int = 24
    cols: int = 80
    # The scheduler lease's fencing token when the lease holder sends it (cron);
    # 0 for a `run`. A fenced run is refused when older than a token the runner
    # has seen, starts a session id at most once, and is not cut when nobody
    # polls it: its controller may have died, and the next lease holder
    # collects its output and exit status.
    fence: int = 0


class DataStart(Msg, frozen=True, kw_only=True):
    """Run a file-transfer server on `app`'s data directory (servicehost).

    tool "rsync": `rsync --server [--sender] <options> . <paths>`;
    tool "scp": `scp -t|-f <options> <path>` (options e.g. "-t", "-r");
    tool "sftp": an SFTP server whose root shows the directories of `apps`
    (`app` is unused; what a client wants is in its SFTP requests).
    Paths are relative to the data directory ("" or "." for its root).
    """

    session: str
    app: str
    tool: Literal["rsync", "scp", "sftp"]
    options: list[str] = []
    paths: list[str] = []
    apps: list[str] = []
    # The apps' numeric ids: the tools run as the app's own user, who owns
    # its live tree (roost.datadir); 0 or missing (an older gateway): the
    # servicehost's shared tools user.
    app_id: int = 0
    app_ids: dict[str, int] = {}
    # The apps' own data quotas in MiB (AppGrant.data_quota_mb; 0 or
    # missing: the servicehost's ROOST_DATA_QUOTA_MB).
    data_quota_mb: int = 0
    data_quotas: dict[str, int] = {}


class ExecInput(Msg, frozen=True, kw_only=True):
    session: str
    # Offset of `data` in the session's input stream (resends are ignored).
    offset: int
    data: bytes = b""
    eof: bool = False


class ExecResize(Msg, frozen=True, kw_only=True):
    session: str
    rows: int
    cols: int


class ExecSignal(Msg, frozen=True, kw_only=True):
    session: str
    signal: str  # "INT", "TERM", "HUP", "KILL", ...


class ExecPoll(Msg, frozen=True, kw_only=True):
    """Output after `after` (chunks up to it are acknowledged and dropped);
    waits up to `wait_s` for something new."""

    session: str
    after: int = 0
    wait_s: float = 1.0


class ExecChunk(msgspec.Struct, frozen=True, kw_only=True):
    seq: int
    stream: Literal["stdout", "stderr"] = "stdout"
    data: bytes


class ExecOutput(Msg, frozen=True, kw_only=True):
    session: str
    chunks: list[ExecChunk] = []
    # Set once the process has exited and every chunk has been sent.
    exit_status: int | None = None
    exit_signal: str = ""


class ExecClose(Msg, frozen=True, kw_only=True):
    """The client is gone: stop the process (TERM, grace, KILL) and forget it."""

    session: str


# ---------------------------------------------------------------- app data directories


class DataVersion(Msg, frozen=True, kw_only=True):
    app: str


class DataVersionReply(Msg, frozen=True, kw_only=True):
    app: str
    # Changes whenever the canonical copy changes (0: no data yet).
    version: int = 0


class DataPull(Msg, frozen=True, kw_only=True):
    app: str
    # The version the caller has; the reply carries no archive when unchanged.
    have_version: int = 0


class DataArchive(Msg, frozen=True, kw_only=True):
    app: str
    version: int
    unchanged: bool = False
    # tar.gz of the whole directory (regular files and directories only).
    archive: bytes = b""


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


class ImageCopy(Msg, frozen=True, kw_only=True):
    """Controller -> runner: hold a verified copy of an image (manifest and
    layers) or a static bundle: asked of a second host before a release is
    made, so losing the builder's store never loses the image of a serving
    release."""

    digest: str


class ImageSource(msgspec.Struct, frozen=True, kw_only=True):
    """A runner that holds a copy: its RPC endpoint and CURVE key (z85)."""

    host_id: str
    endpoint: str
    key: str


class ImageSourcesRequest(Msg, frozen=True, kw_only=True):
    """Runner -> controller: which live hosts hold a copy of `digest`
    (asked when the builders' stores cannot serve it); `host_id` is the
    asker, left out of the answer."""

    digest: str
    host_id: str = ""


class ImageSources(Msg, frozen=True, kw_only=True):
    digest: str
    sources: list[ImageSource] = []


class ImageRetainRequest(Msg, frozen=True, kw_only=True):
    """Runner or builder -> controller: of the images this host's store
    holds, which must it keep? For a runner's copy store the controller also
    forgets the copies no longer `held`; a builder's store (`builder`) holds
    no recorded copies, so only the answer changes."""

    host_id: str
    held: list[str] = []
    builder: bool = False  # a builder's store asks (only a builder may say so)


class ImageRetain(Msg, frozen=True, kw_only=True):
    # The held digests a current, pending or rollback release still uses.
    digests: list[str] = []


# ---------------------------------------------------------------- backups (the backupd role)
#
# backupd pulls: it asks each servicehost, gateway and controller for what it
# backs up; nothing it backs up ever holds a credential to a repository.

BackupKind = Literal["pgbase", "pgdump", "redis", "data", "git", "platform"]
# "skipped": there was nothing to back up (a repository without a commit
# yet, as during an app's first push): recorded with why, neither proven nor
# failed, and never restorable.
BackupState = Literal["taken", "verified", "failed", "skipped"]


class BackupSourceRequest(Msg, frozen=True, kw_only=True):
    """backupd -> servicehost: how to reach what it holds (and grant that access)."""

    # The physical replication slots this backupd streams servicehost pairs'
    # WAL through: a servicehost in a pair declares them permanent in its
    # pair's Patroni configuration (`slots:`), so Patroni neither drops them
    # as unknown nor loses them in a failover (the new primary makes them).
    pair_slots: list[str] = []


class PgSource(msgspec.Struct, frozen=True, kw_only=True):
    host: str
    port: int
    # A role with REPLICATION and pg_read_all_data, allowed from backupd's
    # addresses only. It is a member of no app's role: it writes only into
    # restore-prepared databases (see ServiceRestoreStep).
    user: str
    password: str
    # app -> its database name
    databases: dict[str, str] = {}
    # A servicehost pair's PostgreSQL (its name; "" for a servicehost's own):
    # `host` lists both members, comma-separated, and a client connects to
    # whichever takes writes (libpq's target_session_attrs=read-write), so
    # backups follow the primary across a failover.
    pair: str = ""


class RedisSource(msgspec.Struct, frozen=True, kw_only=True):
    app: str
    host: str
    port: int
    # An ACL user that may only SYNC (pull an RDB) and read INFO.
    user: str
    password: str


class BackupSource(Msg, frozen=True, kw_only=True):
    host_id: str  # which servicehost this is: its key's name ('servicehost' on every host)
    # Its id to the controllers (its identity's host: ServiceHostStatus.host_id),
    # what backupd names it by; "" from an older servicehost (then host_id).
    holder_id: str = ""
    postgres: PgSource | None = None
    # The PostgreSQL of this servicehost's pair, holding its apps' databases
    # (then `postgres` lists none of them); None when in no pair.
    pg_pair: PgSource | None = None
    redis: list[RedisSource] = []
    data_apps: list[str] = []  # apps with a data directory
    # The servicehost's state.json (passwords, ports): a fresh servicehost
    # restored from it serves the same credentials.
    state_json: bytes = b""


class ServiceRestoreStep(Msg, frozen=True, kw_only=True):
    """backupd -> servicehost: the servicehost's side of restoring a PostgreSQL
    database. "prepare": an empty database owned by the app's role, for
    backupd to load and verify; "swap": that database becomes the app's (or
    `target`'s) and the old one is kept renamed; "discard": drop the prepared one.

    backupd loads the prepared database as PgSource.user, the only database
    it may write: `pg_restore --no-owner --no-privileges`. "swap" hands
    everything in it to the app's role (REASSIGN OWNED) and takes back the
    backup role's CREATE, and any grant made meanwhile, before it serves."""

    app: str
    restore_id: str  # [a-z0-9]{1,16}
    step: Literal["prepare", "swap", "discard"]
    target: str = ""  # "" in place; else a new database name


class ServiceRestoreReady(Msg, frozen=True, kw_only=True):
    database: str  # prepare: where to load; swap: the database now serving
    kept: str = ""  # swap in place: the name the old data is kept under


class RedisRestore(Msg, frozen=True, kw_only=True):
    """backupd -> servicehost: replace the app's Redis data with this RDB
    (checked with redis-check-rdb first; the old files are kept)."""

    app: str
    restore_id: str
    rdb: bytes


class DataRestore(Msg, frozen=True, kw_only=True):
    """backupd -> servicehost: replace the app's data directory with this tar.gz
    (unpacked beside it first; the old tree is kept)."""

    app: str
    restore_id: str
    archive: bytes


class ServiceHostRestore(Msg, frozen=True, kw_only=True):
    """backupd -> servicehost: take on the services of `state_json` (a lost
    servicehost's state.json, from a platform backup): each app's role with
    its password and an empty database, each Redis on its port with its
    passwords, the backup role's password, PostgreSQL on the recorded port.
    Refused, nothing changed, by a servicehost that holds any app's service
    already (unless it took them on from this same `restore_id`: a repeat
    finishes the job). backupd then restores each app's data into them."""

    state_json: bytes
    restore_id: str  # [a-z0-9]{1,16}


class ServiceHostRestored(Msg, frozen=True, kw_only=True):
    postgres: list[str] = []  # the apps whose database (empty) and role it now has
    redis: list[str] = []  # the apps whose Redis (empty) it now runs


class PairReplace(Msg, frozen=True, kw_only=True):
    """controller -> the surviving servicehost of a pair: the servicehost at
    `old` (an address) is lost for good and the one at `new` takes its place
    (roost.servicehost.pgreplace): refused, nothing changed, while OLD's
    Patroni answers; else OLD's member is removed from the pair's Patroni
    cluster and the pair recorded with NEW. Answered with the plan NEW runs
    its member from (PairPlanned); a repeat answers the same."""

    pair: str
    old: str
    new: str


class PairPlanned(Msg, frozen=True, kw_only=True):
    # The pair's plan (pgpair.PairPlan, JSON) for NEW: it holds the pair's
    # passwords, so it is passed on to NEW and never stored or shown.
    plan: bytes


class PairJoin(Msg, frozen=True, kw_only=True):
    """controller -> a servicehost in no pair and holding no app's service:
    run a member of the pair `plan` names (PairPlanned's), which Patroni
    makes a streaming standby of the primary. A repeat answers Ok."""

    plan: bytes


class RepoBundleRequest(Msg, frozen=True, kw_only=True):
    """backupd -> gateway: `git bundle` of the app's repository ("" app: list)."""

    app: str = ""


class RepoBundle(Msg, frozen=True, kw_only=True):
    app: str
    bundle: bytes = b""  # empty when the repository has no commit
    apps: list[str] = []  # the apps with a repository (for app "")


class RepoRestore(Msg, frozen=True, kw_only=True):
    """backupd -> gateway: put this bundle back as the app's repository."""

    app: str
    bundle: bytes


class PlatformSnapshotRequest(Msg, frozen=True, kw_only=True):
    """backupd -> controller: a consistent copy of the platform's own state."""


class PlatformSnapshot(Msg, frozen=True, kw_only=True):
    # relative path -> bytes: "state.sqlite" (SQLite online backup) or
    # "state.pgdump" (pg_dump -Fc), "keys/fernet.key", "cluster.json", ...
    files: dict[str, bytes] = {}
    schema_version: str = ""
    # What a restore needs of the state, said by the controller so that
    # backupd never reads its tables: app name -> its key ("<id>-<created
    # ms>", which names its directories and repository: roost.appdirs), and
    # the digests of the images and static bundles its releases keep
    # (current, pending, rollback: roost.controller.copies). None from a
    # controller older than these fields.
    app_keys: dict[str, str] | None = None
    images: list[str] | None = None


class BackupCapture(Msg, frozen=True, kw_only=True):
    """controller -> backupd: back the app up now, and keep it (before a
    release, a service removal, an app's deletion; or `roost backups capture`)."""

    app: str
    reason: str
    kinds: list[BackupKind] = []  # empty: everything the app has


class BackupEntry(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    app: str  # "" for the platform and the PostgreSQL cluster's base backups
    kind: BackupKind
    taken_at: float
    reason: str = "scheduled"
    size: int = 0
    state: BackupState = "taken"
    message: str = ""  # why a backup or its drill failed
    verified_at: float = 0.0
    # location name -> "ok" or "error: ..."
    locations: dict[str, str] = {}
    # Which backupd holds it (its host in the address book): each keeps its
    # own history. Set by the controller, which asks every backupd and
    # merges their answers; "" as backupd sends it.
    backupd: str = ""


class BackupCaptured(Msg, frozen=True, kw_only=True):
    entries: list[BackupEntry] = []


class BackupListRequest(Msg, frozen=True, kw_only=True):
    app: str = ""  # "" for every app


class BackupList(Msg, frozen=True, kw_only=True):
    entries: list[BackupEntry] = []
    # The point-in-time window of the app's database (0.0, 0.0: none).
    pitr_from: float = 0.0
    pitr_to: float = 0.0


class BackupRestore(Msg, frozen=True, kw_only=True):
    """controller -> backupd. Exactly one of `backup_id` and `at` (ISO 8601,
    UTC unless an offset is given)."""

    app: str
    backup_id: str = ""
    at: str = ""
    to: str = ""  # a new database name; "" restores in place


class BackupRestored(Msg, frozen=True, kw_only=True):
    message: str
    database: str = ""
    kept: str = ""  # where the replaced data was kept
    safety_backup: str = ""  # the backup taken first


class BackupHostRestore(Msg, frozen=True, kw_only=True):
    """controller -> backupd: every app of a servicehost that lost its data,
    back onto it (fresh: it holds no app's service) from the newest platform
    backup's record of it and each app's newest verified backups."""

    host: str  # the servicehost's id (its name in the address book)


class HostRestoreReport(msgspec.Struct, frozen=True, kw_only=True):
    app: str
    kind: BackupKind
    ok: bool
    backup_id: str = ""  # "" when there was none to restore
    message: str = ""


class BackupHostRestored(Msg, frozen=True, kw_only=True):
    host: str
    platform_backup: str  # the backup whose record of the servicehost was used
    reports: list[HostRestoreReport] = []  # one per app and kind; failures say why


class BackupPolicySet(Msg, frozen=True, kw_only=True):
    app: str
    pitr_days: int = 7
    daily: int = 30
    weekly: int = 12
    monthly: int = 12


class BackupEvent(Msg, frozen=True, kw_only=True):
    """backupd -> controller: a backup or drill failed (or recovered): a platform event."""

    app: str
    kind: BackupKind
    ok: bool
    message: str


class HostRestoreApp(Msg, frozen=True, kw_only=True):
    """backupd -> controller: one app's part of a host restore starts (the
    controller suspends it: its maintenance page, answering Ok(detail=
    APP_SUSPENDED) when it did, Ok() when the app was suspended already or is
    unknown) or ended. At the end, the controller resumes it when every kind
    came back (`ok`) and it suspended it at the start (`resume`, from that
    answer); an app that did not come back whole stays suspended. An app's
    own restore in place sends the start alone, right before its data is
    replaced: the controller that asked for the restore resumes it after."""

    host: str
    app: str
    starting: bool
    resume: bool = False  # (the end) the start's answer said it suspended the app
    ok: bool = True  # (the end) every kind of the app came back
    message: str = ""  # (the end) what came back or did not
    # (an app's own restore's start) its id: the controller records the
    # suspension as this restore's, and resumes the app once backupd no
    # longer runs it (roost.controller.restorehold); "" for a host restore.
    restore_id: str = ""


class BackupRestoresRequest(Msg, frozen=True, kw_only=True):
    """controller -> backupd: which of its app restores are running (those
    that may have asked for a suspension: roost.controller.restorehold)."""


class BackupRestoresRunning(Msg, frozen=True, kw_only=True):
    ids: list[str] = []  # the restores' ids (HostRestoreApp.restore_id)


APP_SUSPENDED = "suspended"  # HostRestoreApp's answer: this start suspended the app


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
