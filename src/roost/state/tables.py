"""The state database: desired state written by controllers only.

Soft state (what runners report) lives in controller memory and is rebuilt
from heartbeats; only what must survive a restart of every controller is here.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)

metadata = MetaData()

accounts = Table(
    "accounts",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False, default=""),
    Column("is_admin", Boolean, nullable=False, default=False),
    Column("created_at", Float, nullable=False),
)

tokens = Table(
    "tokens",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    # sha256 of the token: a leaked database does not leak usable tokens.
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("name", String(100), nullable=False, default=""),
    Column("created_at", Float, nullable=False),
    Column("revoked_at", Float, nullable=True),
    # Epoch seconds after which the token is refused; NULL: until revoked.
    Column("expires_at", Float, nullable=True),
)

apps = Table(
    "apps",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("owner_id", Integer, ForeignKey("accounts.id"), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("suspended", Boolean, nullable=False, default=False),
    # Version of the release that serves traffic; NULL before the first deploy.
    Column("current_release", Integer, nullable=True),
    # The app's own size for its data directory in MiB (`roost data quota`);
    # NULL: the platform's ROOST_DATA_QUOTA_MB (migration 0023).
    Column("data_quota_mb", Integer, nullable=True),
)

# Counters that only grow: the next app id is one more than its row
# (migration 0008), so an id, and the tenant uid derived from it, is never
# handed out twice, whatever was deleted.
id_counters = Table(
    "id_counters",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Integer, nullable=False),
)

builds = Table(
    "builds",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("app_id", Integer, ForeignKey("apps.id", ondelete="CASCADE"), nullable=False),
    # pending -> building -> deploying -> succeeded | failed
    Column("status", String(16), nullable=False),
    Column("created_at", Float, nullable=False),
    Column("finished_at", Float, nullable=True),
    Column("error", Text, nullable=False, default=""),
    Column("release", Integer, nullable=True),
    # When it entered its stage (wall clock; NULL before migration 0015).
    Column("moved_at", Float, nullable=True),
    Index("ix_builds_status", "status"),
)

# The upload of a deploy waiting in `queued` (deployflow): kept so that any
# controller can start it when the app's earlier deploy ends; removed with
# the move out of `queued`.
build_uploads = Table(
    "build_uploads",
    metadata,
    Column("build_id", String(32), ForeignKey("builds.id", ondelete="CASCADE"), primary_key=True),
    Column("archive", LargeBinary, nullable=False),
)

releases = Table(
    "releases",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("app_id", Integer, ForeignKey("apps.id", ondelete="CASCADE"), nullable=False),
    Column("version", Integer, nullable=False),
    Column("build_id", String(32), nullable=True),
    # pending (rolling out) -> active -> superseded; or failed; active ->
    # rolled-back (it crash-looped after promotion and was rolled back from)
    Column("status", String(16), nullable=False),
    Column("image_digest", String(80), nullable=False),
    Column("static_digest", String(80), nullable=False, default=""),
    Column("spec_json", Text, nullable=False),
    Column("lock", Text, nullable=False, default=""),
    Column("description", Text, nullable=False, default=""),
    Column("created_at", Float, nullable=False),
    # Config vars as they were when the release was made (JSON object): a
    # release is code + config, so a config change is a new release.
    Column("config_json", Text, nullable=False, default="{}", server_default="{}"),
    # Static routes the builder derived (URL prefix -> path in the static
    # bundle), JSON list of wire StaticRoute.
    Column("static_json", Text, nullable=False, default="[]", server_default="[]"),
    # When it went live (wall clock): it is watched for crash loops for the
    # rollback window after that (controller/aftercare.py).
    Column("promoted_at", Float, nullable=True),
    UniqueConstraint("app_id", "version"),
)

formation = Table(
    "formation",
    metadata,
    Column("app_id", Integer, ForeignKey("apps.id", ondelete="CASCADE"), primary_key=True),
    Column("process_type", String(64), primary_key=True),
    Column("quantity", Integer, nullable=False),
    # Memory of each instance of this type in MB (its cgroup's limit, what
    # placement reserves); 0: the platform's default.
    Column("memory_mb", Integer, nullable=False, default=0, server_default="0"),
)

config_vars = Table(
    "config_vars",
    metadata,
    Column("app_id", Integer, ForeignKey("apps.id", ondelete="CASCADE"), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("value", Text, nullable=False),
)

placements = Table(
    "placements",
    metadata,
    Column("instance_id", String(128), primary_key=True),
    Column("app_id", Integer, ForeignKey("apps.id", ondelete="CASCADE"), nullable=False),
    Column("release", Integer, nullable=False),
    Column("process_type", String(64), nullable=False),
    Column("idx", Integer, nullable=False),
    Column("host_id", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
)
Index("ix_placements_host", placements.c.host_id)

hosts = Table(
    "hosts",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("hostname", String(255), nullable=False),
    Column("addresses", Text, nullable=False, default="[]"),
    Column("memory_mb", Integer, nullable=False, default=0),
    Column("cpus", Integer, nullable=False, default=0),
    Column("first_seen", Float, nullable=False),
    Column("last_seen", Float, nullable=False),
)

leases = Table(
    "leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(128), nullable=False),
    # Fencing token: grows with every grant to a new holder.
    Column("token", Integer, nullable=False),
    # Seconds since the epoch on the database's clock.
    Column("expires_at", Float, nullable=False),
)

log_lines = Table(
    "log_lines",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("app_id", Integer, ForeignKey("apps.id", ondelete="CASCADE"), nullable=False),
    Column("ts", Float, nullable=False),
    Column("source", String(16), nullable=False),
    Column("process", String(128), nullable=False, default=""),
    Column("stream", String(8), nullable=False, default="stdout"),
    Column("line", Text, nullable=False),
)
Index("ix_log_lines_app", log_lines.c.app_id, log_lines.c.id)
Index("ix_log_lines_process", log_lines.c.process)

log_drains = Table(
    "log_drains",
    metadata,
    # Where an app's log lines are also sent (`roost drains add`): syslog
    # over TCP or TLS, or HTTPS batches (controller/logdrains.py).
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("app_id", Integer, ForeignKey("apps.id", ondelete="CASCADE"), nullable=False),
    Column("url", Text, nullable=False),
    # Sent with every line or batch so a receiver can tell drains apart
    # (Heroku's drain token, "d.<uuid>").
    Column("token", String(64), nullable=False),
    Column("created_at", Float, nullable=False),
    UniqueConstraint("app_id", "url"),
)

log_drain_status = Table(
    "log_drain_status",
    metadata,
    # What one controller delivered, dropped and last saw go wrong for a
    # drain: each replica sends the lines it receives and writes its own
    # row; `roost drains list` adds them up.
    Column("drain_id", Integer, ForeignKey("log_drains.id", ondelete="CASCADE"), primary_key=True),
    Column("holder", String(128), primary_key=True),
    # Lines since that controller started: past 2**31 on a busy drain.
    Column("delivered", BigInteger, nullable=False, default=0),
    Column("dropped", BigInteger, nullable=False, default=0),
    Column("failing", Boolean, nullable=False, default=False),
    Column("last_error", Text, nullable=False, default=""),
    Column("last_ok_at", Float, nullable=True),  # wall clock
    Column("last_error_at", Float, nullable=True),
    Column("updated_at", Float, nullable=False),
)

log_retention = Table(
    "log_retention",
    metadata,
    # An app's own retention of the built-in log store (`roost
    # log-retention`); an app without a row keeps ROOST_LOG_LINES lines.
    Column("app_id", Integer, ForeignKey("apps.id", ondelete="CASCADE"), primary_key=True),
    Column("lines", Integer, nullable=True),  # None: the platform's default
    Column("days", Float, nullable=True),  # None: no age limit
)

events = Table(
    "events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", Float, nullable=False),
    Column("app_id", Integer, ForeignKey("apps.id", ondelete="CASCADE"), nullable=True),
    Column("kind", String(32), nullable=False),
    Column("message", Text, nullable=False),
)


collaborators = Table(
    "collaborators",
    metadata,
    Column("app_id", Integer, ForeignKey("apps.id", ondelete="CASCADE"), primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True),
)

domains = Table(
    "domains",
    metadata,
    Column("hostname", String(255), primary_key=True),
    Column("app_id", Integer, ForeignKey("apps.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", Float, nullable=False),
)

certificates = Table(
    "certificates",
    metadata,
    Column("hostname", String(255), primary_key=True),
    Column("app_id", Integer, ForeignKey("apps.id", ondelete="CASCADE"), nullable=False),
    Column("cert_pem", Text, nullable=False),
    Column("key_pem", Text, nullable=False),
    Column("not_after", Float, nullable=False),
    Column("created_at", Float, nullable=False),
)

acme_orders = Table(
    "acme_orders",
    metadata,
    # A custom domain whose certificate Roost gets by ACME (controller/acme*.py):
    # its state (pending | valid | failing), why it last failed (dns, timeout,
    # refused, ...), and when the scheduler lease holder tries next.
    Column("hostname", String(255), primary_key=True),
    Column("app_id", Integer, ForeignKey("apps.id", ondelete="CASCADE"), nullable=False),
    Column("state", String(16), nullable=False),
    Column("reason", String(32), nullable=False, default=""),
    Column("detail", Text, nullable=False, default=""),
    Column("failures", Integer, nullable=False, default=0),  # in a row, for the backoff
    Column("next_at", Float, nullable=False),  # wall clock of the next order or renewal
    Column("updated_at", Float, nullable=False),
)

acme_challenges = Table(
    "acme_challenges",
    metadata,
    # HTTP-01 answers pending now: published with the route table so every
    # router answers /.well-known/acme-challenge/TOKEN for the domain.
    Column("token", String(255), primary_key=True),
    Column("hostname", String(255), nullable=False),
    Column("app_id", Integer, ForeignKey("apps.id", ondelete="CASCADE"), nullable=False),
    Column("key_authorization", Text, nullable=False),
    Column("created_at", Float, nullable=False),
)

acme_accounts = Table(
    "acme_accounts",
    metadata,
    # The platform's account at one ACME directory; the key sealed (SecretBox).
    Column("directory", String(512), primary_key=True),
    Column("key_sealed", Text, nullable=False),
    Column("uri", Text, nullable=False, default=""),
    Column("created_at", Float, nullable=False),
)

ssh_keys = Table(
    "ssh_keys",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("account_id", Integer, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("fingerprint", String(128), nullable=False, unique=True),
    Column("public_key", Text, nullable=False),
    Column("name", String(255), nullable=False, default=""),
    Column("created_at", Float, nullable=False),
)

service_bindings = Table(
    "service_bindings",
    metadata,
    Column("app_id", Integer, ForeignKey("apps.id", ondelete="CASCADE"), primary_key=True),
    Column("kind", String(32), primary_key=True),
    # The credentials, encrypted (Fernet) with a key only controllers hold.
    Column("secret", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    # The servicehost that holds the data (its host id; "" before migration
    # 0016, until the controller finds out which one does), and the one that
    # holds its standby ("" while services have no standby).
    Column("host", String(255), nullable=False, server_default=""),
    Column("standby_host", String(255), nullable=False, server_default=""),
)

service_pairs = Table(
    "service_pairs",
    metadata,
    # Servicehosts in pairs (issue 16): each pair's PostgreSQL is one Patroni
    # cluster, its primary on one of the two and a synchronous standby on the
    # other (roost.servicehost.pgpair). Which is primary is Patroni's to say,
    # asked at each request, never recorded here.
    Column("name", String(64), primary_key=True),
    Column("first_host", String(255), nullable=False),  # servicehost ids
    Column("second_host", String(255), nullable=False),
    Column("first_address", String(255), nullable=False),  # where Patroni answers
    Column("second_address", String(255), nullable=False),
    Column("pg_port", Integer, nullable=False),
    Column("rest_port", Integer, nullable=False),
    # Where each runner's data proxy listens for this pair (runner/dataproxy.py).
    Column("proxy_port", Integer, nullable=False, unique=True),
    Column("created_at", Float, nullable=False),
)

retired_servicehosts = Table(
    "retired_servicehosts",
    metadata,
    # Servicehosts replaced for good (controller/replace.py, migration 0024):
    # never surveyed, listed or let back; their sentinels asked by no one.
    Column("host", String(255), primary_key=True),  # its servicehost id
    Column("address", String(255), nullable=False),  # its endpoints' host
    Column("replaced_by", String(255), nullable=False),
    Column("retired_at", Float, nullable=False),
)

restore_holds = Table(
    "restore_holds",
    metadata,
    # An app suspended for its own restore (controller/restorehold.py,
    # migration 0025): resumed once backupd no longer runs that restore. No
    # foreign key: release 0.2.0 deletes apps without knowing this table.
    Column("app_id", Integer, primary_key=True),
    Column("app", String(255), nullable=False),  # its name (an id may be reused)
    Column("restore_id", String(64), nullable=False),
    Column("since", Float, nullable=False),  # time.time()
    # A user suspended or resumed it since: the restore's end leaves it so.
    Column("by_user", Boolean, nullable=False, default=False, server_default=false()),
)

app_pairs = Table(
    "app_pairs",
    metadata,
    # The pair an app's services were placed on (controller/serviceplace.py).
    Column("app_id", Integer, ForeignKey("apps.id", ondelete="CASCADE"), primary_key=True),
    Column("pair", String(64), ForeignKey("service_pairs.name"), nullable=False),
    Column("placed_at", Float, nullable=False),
)

cron_claims = Table(
    "cron_claims",
    metadata,
    Column("app_id", Integer, ForeignKey("apps.id", ondelete="CASCADE"), primary_key=True),
    Column("job", String(32), primary_key=True),
    # Unix minute of the run: the unique key makes "once across replicas" hold
    # even when two controllers briefly both believe they hold the lease.
    Column("slot", Integer, primary_key=True),
    Column("claimed_by", String(128), nullable=False),
    Column("claimed_at", Float, nullable=False),
    # The scheduler lease's fencing token of the claim's current owner: every
    # change is a compare-and-set on it (controller/cron.py tells the story).
    Column("fence", Integer, nullable=False, default=0),
    # queued -> claimed -> started -> finished
    Column("state", String(16), nullable=False),
    # Once finished: succeeded, failed, skipped, missed or lost.
    Column("status", String(16), nullable=False, default=""),
    # Where it was started (recorded before RunStart is sent).
    Column("runner", String(128), nullable=False, default=""),
    Column("session", String(64), nullable=False, default=""),
    Column("started_at", Float, nullable=True),
    Column("finished_at", Float, nullable=True),
    Column("exit_code", Integer, nullable=True),
    # Output already in the app's log: last acknowledged chunk, unterminated
    # tails (msgpack {stream: bytes}), lines written.
    Column("out_seq", Integer, nullable=False, default=0),
    Column("out_tail", LargeBinary, nullable=True),
    Column("out_lines", Integer, nullable=False, default=0),
)
Index("ix_cron_claims_state", cron_claims.c.state)

image_copies = Table(
    "image_copies",
    metadata,
    # An image digest ("sha256:<hex>") a host confirmed it holds, verified,
    # in its own store: runners fetch from these hosts when no builder can
    # serve the image. Rows of hosts that dropped a copy are removed when the
    # host next reports what it holds (ImageRetainRequest).
    Column("digest", String(71), primary_key=True),
    Column("host_id", String(64), primary_key=True),
    Column("created_at", Float, nullable=False),
)
Index("ix_image_copies_host", image_copies.c.host_id)

host_drains = Table(
    "host_drains",
    metadata,
    # A host an operator drained (`roost hosts drain`): it takes no new
    # placement and its instances move elsewhere, make-before-break
    # (controller/hostdrain.py). Desired state: a new lease holder goes on.
    Column("host_id", String(64), primary_key=True),
    Column("since", Float, nullable=False),
    # What keeps the drain from ending ("" when nothing does), written by
    # the lease holder: any replica shows it.
    Column("note", Text, nullable=False, default=""),
)

notify_targets = Table(
    "notify_targets",
    metadata,
    # Where alerts go (`roost notify add`, controller/notify.py): a webhook
    # (http/https) or e-mail (mailto:/smtp:) of one app, or of the whole
    # platform when app_id is NULL.
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("app_id", Integer, ForeignKey("apps.id", ondelete="CASCADE"), nullable=True),
    # Shown as is: the URL with any password replaced by "***".
    Column("url", Text, nullable=False),
    # SecretBox-sealed {"url": the URL as given, "secret": HMAC key or ""}.
    Column("sealed", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    # Added by an operator: may reach private addresses. An app member's
    # target reaches public ones only (the controller sits inside).
    Column("trusted", Boolean, nullable=False, default=False),
)

notify_events = Table(
    "notify_events",
    metadata,
    # An alert, stored in the transaction of the event that raised it, before
    # any delivery: a controller restart loses none. The app by name (and no
    # foreign key): an app's deletion is itself an alert of the platform's.
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ts", Float, nullable=False),
    Column("kind", String(64), nullable=False),
    Column("app", String(64), nullable=False, default=""),
    Column("message", Text, nullable=False, default=""),
    Column("fields", Text, nullable=False, default="{}"),  # JSON object
)

notify_deliveries = Table(
    "notify_deliveries",
    metadata,
    # One event to one target: state pending -> delivered | failed, retried
    # with backoff by the scheduler lease holder (controller/notifier.py).
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("event_id", Integer, ForeignKey("notify_events.id", ondelete="CASCADE"), nullable=False),
    Column(
        "target_id", Integer, ForeignKey("notify_targets.id", ondelete="CASCADE"), nullable=False
    ),
    Column("state", String(16), nullable=False, default="pending"),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_at", Float, nullable=False),  # wall clock of the next try
    Column("last_at", Float, nullable=True),
    Column("last_error", Text, nullable=False, default=""),
    UniqueConstraint("event_id", "target_id"),
)
Index("ix_notify_deliveries_due", notify_deliveries.c.state, notify_deliveries.c.next_at)
Index("ix_notify_deliveries_target", notify_deliveries.c.target_id)
