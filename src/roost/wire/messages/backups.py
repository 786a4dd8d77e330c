"""The backupd role and restores.

Part of `roost.wire.messages`, which every role imports them from.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from roost.wire.messages.base import Msg

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
    # A pair's Patroni REST port (0: not said, an older servicehost):
    # backupd asks the members which is the primary before connecting, and
    # lists it first (libpq waits out its connect_timeout on a member whose
    # host is down without a reset before it tries the next).
    rest_port: int = 0


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
    # Apps with an S3 bucket here (BucketPull): backed up with their data
    # directory, in the "data" kind's snapshot. Empty from an older servicehost.
    bucket_apps: list[str] = []
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
    buckets: list[str] = []  # the apps whose S3 bucket (empty) and key it now serves


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
