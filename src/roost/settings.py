"""Every platform setting, declared once: name, type, default, env var, doc.

A daemon reads `Settings.from_env()`; command-line options override single
fields. Roles add their settings here rather than scattering constants, so
`roost settings` (and the docs) can list them all.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from typing import Any


def _setting(default: Any, env: str, doc: str) -> Any:
    return field(default=default, metadata={"env": env, "doc": doc})


@dataclass(frozen=True)
class Settings:
    api_port: int = _setting(8000, "ROOST_API_PORT", "HTTP API port of the controller")
    api_tls_cert: str = _setting(
        "",
        "ROOST_API_TLS_CERT",
        "controller: PEM certificate chain the API serves HTTPS with ('' = off loopback, "
        "a self-signed one made in DATA/controller/tls/)",
    )
    api_tls_key: str = _setting(
        "", "ROOST_API_TLS_KEY", "controller: PEM private key of ROOST_API_TLS_CERT"
    )
    api_tls_names: str = _setting(
        "",
        "ROOST_API_TLS_NAMES",
        "controller: extra names/addresses (comma-separated) for the self-signed API certificate",
    )
    router_port: int = _setting(8080, "ROOST_ROUTER_PORT", "HTTP port of the router")
    router_tls_port: int = _setting(
        8443, "ROOST_ROUTER_TLS_PORT", "HTTPS port of the router (0 disables TLS)"
    )
    router_workers: int = _setting(
        1, "ROOST_ROUTER_WORKERS", "router worker processes (SO_REUSEPORT)"
    )
    router_host_id: str = _setting(
        "", "ROOST_ROUTER_HOST_ID", "host id the router runs on (unix sockets there are local)"
    )
    router_connect_timeout_s: float = _setting(
        5.0, "ROOST_ROUTER_CONNECT_TIMEOUT_S", "longest wait to connect to an app instance"
    )
    router_first_byte_timeout_s: float = _setting(
        60.0, "ROOST_ROUTER_FIRST_BYTE_TIMEOUT_S", "longest wait for an instance's response head"
    )
    router_idle_timeout_s: float = _setting(
        60.0, "ROOST_ROUTER_IDLE_TIMEOUT_S", "silence allowed mid-body and on idle keep-alive"
    )
    router_header_timeout_s: float = _setting(
        10.0, "ROOST_ROUTER_HEADER_TIMEOUT_S", "time a client has to send a full request head"
    )
    router_max_header_bytes: int = _setting(
        64 * 1024, "ROOST_ROUTER_MAX_HEADER_BYTES", "largest request head (431 beyond)"
    )
    router_max_body_bytes: int = _setting(
        100 * 1024 * 1024, "ROOST_ROUTER_MAX_BODY_BYTES", "largest request body (413 beyond)"
    )
    router_eject_s: float = _setting(
        10.0, "ROOST_ROUTER_EJECT_S", "how long a failing instance gets no traffic"
    )
    router_max_fails: int = _setting(
        1, "ROOST_ROUTER_MAX_FAILS", "consecutive failures before an instance is ejected"
    )
    router_upstream_idle_s: float = _setting(
        1.0, "ROOST_ROUTER_UPSTREAM_IDLE_S", "how long an idle pooled instance connection is kept"
    )
    router_access_log: str = _setting(
        "", "ROOST_ROUTER_ACCESS_LOG", "access log file ('' = DATA/router/access.log, '-' = off)"
    )
    router_access_log_bytes: int = _setting(
        64 * 1024**2, "ROOST_ROUTER_ACCESS_LOG_BYTES", "access log size at which it is rotated"
    )
    router_access_log_keep: int = _setting(
        5, "ROOST_ROUTER_ACCESS_LOG_KEEP", "rotated access logs kept (access.log.1 ...)"
    )
    router_drain_s: float = _setting(
        10.0,
        "ROOST_ROUTER_DRAIN_S",
        "router: on TERM/INT/USR2, how long requests in flight and keep-alive connections "
        "may take to finish before they are closed",
    )
    ssh_port: int = _setting(2222, "ROOST_SSH_PORT", "SSH port of the gateway")
    exec_idle_s: float = _setting(
        30.0,
        "ROOST_EXEC_IDLE_S",
        "runner/servicehost: kill a `run`/rsync/scp session nobody polled for this long",
    )
    runner_rpc_port: int = _setting(
        0, "ROOST_RUNNER_RPC_PORT", "runner: port of its exec-session RPC server (0: any free)"
    )
    data_sync_s: float = _setting(
        5.0, "ROOST_DATA_SYNC_S", "runner: how often to check apps' data directories for changes"
    )
    appdata_root: str = _setting(
        "",
        "ROOST_APPDATA_ROOT",
        "servicehost/runner: the directory holding every app's live data directory "
        "(empty: DATA/servicehost/appdata; in a cluster, the shared file system's mount)",
    )
    data_quota_mb: int = _setting(
        0,
        "ROOST_DATA_QUOTA_MB",
        "servicehost/runner/controller: each app's data directory quota in MiB, a file system "
        "of its own (roost.datadir.quota; 0: none, a plain directory); an app's own size "
        "(roost data quota) overrides it",
    )
    archive_days: float = _setting(
        7.0,
        "ROOST_ARCHIVE_DAYS",
        "days a deleted app's git repository and data directories stay in DATA/<role>/archive "
        "(for an operator to recover) before they are removed",
    )
    metrics_port: int = _setting(
        0, "ROOST_METRICS_PORT", "Prometheus /metrics port of a daemon (0: off)"
    )
    bind_host: str = _setting("127.0.0.1", "ROOST_BIND_HOST", "address daemons bind on")
    acme_directory: str = _setting(
        "",
        "ROOST_ACME_DIRECTORY",
        "controller: ACME directory URL custom domains get certificates from by HTTP-01, e.g. "
        "https://acme-v02.api.letsencrypt.org/directory ('' = off: certificates by hand)",
    )
    acme_email: str = _setting(
        "", "ROOST_ACME_EMAIL", "controller: contact e-mail of the platform's ACME account"
    )
    acme_ca_bundle: str = _setting(
        "",
        "ROOST_ACME_CA_BUNDLE",
        "controller: PEM file of the CA that signs the ACME directory's HTTPS certificate, "
        "when it is a private one ('' = the system's)",
    )
    acme_renew_days: float = _setting(
        30.0,
        "ROOST_ACME_RENEW_DAYS",
        "controller: renew an ACME certificate this many days before it expires "
        "(at most a third of its lifetime)",
    )
    acme_retry_s: float = _setting(
        600.0,
        "ROOST_ACME_RETRY_S",
        "controller: wait after a failed ACME order; doubled per failure in a row, up to a day",
    )
    acme_routers: str = _setting(
        "",
        "ROOST_ACME_ROUTERS",
        "controller: HOST:PORT of every router's HTTP listener, comma-separated, checked to "
        "serve an ACME answer before the CA is told to look ('' = BIND_HOST:ROUTER_PORT)",
    )
    default_domain: str = _setting("localhost", "ROOST_DOMAIN", "apps answer at APP.<domain>")
    web_instances: int = _setting(2, "ROOST_WEB_INSTANCES", "default web instance count")
    heartbeat_interval_s: float = _setting(1.0, "ROOST_HEARTBEAT_S", "runner heartbeat period")
    host_grace_s: float = _setting(5.0, "ROOST_HOST_GRACE_S", "silence before a host is down")
    lease_ttl_s: float = _setting(5.0, "ROOST_LEASE_TTL_S", "scheduler lease lifetime")
    cron_slot_s: float = _setting(
        60.0,
        "ROOST_CRON_SLOT_SECONDS",
        "controller: length of a cron minute (tests shorten it; schedules count slots as "
        "minutes; never change it on a live platform)",
    )
    build_timeout_s: float = _setting(900.0, "ROOST_BUILD_TIMEOUT_S", "wall-clock build limit")
    build_memory_mb: int = _setting(
        2048, "ROOST_BUILD_MEMORY_MB", "builder: memory limit of each build step's cgroup"
    )
    build_pids_max: int = _setting(
        1024, "ROOST_BUILD_PIDS_MAX", "builder: processes and threads of each build step"
    )
    build_output_limit: int = _setting(
        10 * 1024 * 1024, "ROOST_BUILD_OUTPUT_LIMIT", "bytes of build output kept"
    )
    min_free_disk_fraction: float = _setting(
        0.15, "ROOST_MIN_FREE_DISK", "refuse builds/provisioning below this free fraction"
    )
    max_upload_bytes: int = _setting(
        200 * 1024 * 1024, "ROOST_MAX_UPLOAD", "largest accepted upload archive"
    )
    build_user: str = _setting(
        "roost-build", "ROOST_BUILD_USER", "unprivileged user for untrusted build steps (when root)"
    )
    build_python: str = _setting(
        "",
        "ROOST_BUILD_PYTHON",
        "interpreter of an app that names no Python version (default: Roost's own version)",
    )
    build_pythons: str = _setting(
        "",
        "ROOST_BUILD_PYTHONS",
        "interpreters apps may choose from (colon-separated executables or installation "
        "directories; default: pyenv's and uv's installations, /usr/local/bin and /usr/bin)",
    )
    build_check_timeout_s: float = _setting(
        60.0, "ROOST_BUILD_CHECK_TIMEOUT_S", "limit for the build's import check of the entrypoint"
    )
    builder_layers_kept: int = _setting(
        20, "ROOST_BUILDER_LAYERS", "dependency layers a builder keeps (least recently used go)"
    )
    builder_layers_ram: int = _setting(
        2 * 1024**3,
        "ROOST_BUILDER_LAYERS_RAM",
        "bytes of dependency layers a builder keeps in tmpfs (0: on disk only)",
    )
    builder_uv_cache_ram: int = _setting(
        2 * 1024**3,
        "ROOST_BUILDER_UV_CACHE_RAM",
        "bytes of uv's cache a builder keeps in tmpfs beside its layers (0: on disk only)",
    )
    builder_ram_dir: str = _setting(
        "/dev/shm", "ROOST_BUILDER_RAM_DIR", "tmpfs directory for in-memory dependency layers"
    )
    image_cache_bytes: int = _setting(
        5 * 1024**3, "ROOST_IMAGE_CACHE", "runner image cache size before LRU eviction"
    )
    # The variable keeps its older name (settings have no aliases): operators set it.
    copy_store_bytes: int = _setting(
        5 * 1024**3,
        "ROOST_REPLICA_STORE",
        "runner: bytes of image copies held for redundancy before the least needed go",
    )
    keep_releases: int = _setting(
        5,
        "ROOST_KEEP_RELEASES",
        "images kept per app: those of its newest releases that served, the current one "
        "included (rollback targets); older ones are collected from builders and runners",
    )
    smtp_url: str = _setting(
        "",
        "ROOST_SMTP_URL",
        "controller: the SMTP server alerts to mailto: targets go through "
        "(smtp://[user:pass@]host[:port][?starttls=1], or smtps://; '' = none)",
    )
    smtp_from: str = _setting(
        "roost@localhost", "ROOST_SMTP_FROM", "controller: the From address of alert e-mails"
    )
    notify_retry_s: float = _setting(
        10.0,
        "ROOST_NOTIFY_RETRY_S",
        "controller: wait before an alert's first retry; doubled per failed try, up to an hour",
    )
    notify_disk_free: float = _setting(
        0.25,
        "ROOST_NOTIFY_DISK_FREE",
        "controller: a servicehost disk with less than this fraction free raises an alert "
        "(disk-nearly-full)",
    )
    rollback_window_s: float = _setting(
        300.0,
        "ROOST_ROLLBACK_WINDOW_S",
        "a release whose instances crash-loop or fail their health check within this long "
        "after it went live is rolled back to the release before it by itself (0: never)",
    )
    health_every_s: float = _setting(
        10.0,
        "ROOST_HEALTH_EVERY_S",
        "runner: how often a running web instance's declared health check (app.json) is "
        "tried; failing it `attempts` times in a row restarts the instance as a crash",
    )
    restart_backoff_max_s: float = _setting(
        30.0, "ROOST_RESTART_BACKOFF_MAX_S", "longest wait before restarting a crashed instance"
    )
    stop_grace_s: float = _setting(
        10.0,
        "ROOST_STOP_GRACE_S",
        "runner: SIGTERM-to-SIGKILL grace when stopping an instance, and a web instance's "
        "gunicorn --graceful-timeout (an app's ROOST_GRACEFUL_TIMEOUT config var overrides it)",
    )
    drain_s: float = _setting(
        3.0,
        "ROOST_DRAIN_S",
        "controller: a routed web instance that is dropped (new release, scale-down, restart) "
        "leaves the route table at once and is stopped this long after, once every router "
        "has the new table (0: at once)",
    )
    startup_timeout_s: float = _setting(
        60.0,
        "ROOST_STARTUP_TIMEOUT_S",
        "runner: a web instance must pass its health check within this (longer when its "
        "declared check needs more)",
    )
    runner_host_id: str = _setting(
        "",
        "ROOST_HOST_ID",
        "runner: host id (default: generated once, kept in DATA/runner/host_id)",
    )
    # Below Linux's ephemeral ports (32768-60999): no outgoing connection holds one.
    instance_ports: str = _setting(
        "20000-29999",
        "ROOST_INSTANCE_PORTS",
        "runner: TCP ports instances listen on (FIRST-LAST); only routers reach them",
    )
    fork_roles: str = _setting(
        "on",
        "ROOST_FORK_ROLES",
        "roost up: 'on' forks the roles from one process that imported their common "
        "modules once, so that memory is shared (roost.cli.zygote); 'off': each role "
        "a new interpreter",
    )
    role_host: str = _setting(
        "on",
        "ROOST_ROLE_HOST",
        "roost up: 'on' runs the controller, builder, runner and servicehost in one process "
        "(roost.cli.rolehost), each other role in its own; 'off': one process per role; or "
        "groups of roles that share one, e.g. 'controller+runner,builder+backupd'",
    )
    firewall: str = _setting(
        "on",
        "ROOST_FIREWALL",
        "runner: 'on' keeps nftables table 'inet roost' (when root): instance ports for "
        "routers only, no platform port for tenants; 'off' (development only): none",
    )
    log_lines_kept: int = _setting(
        5000,
        "ROOST_LOG_LINES",
        "log lines kept per app (>= 1500) unless the app chose its own (roost log-retention)",
    )
    log_drain_ca: str = _setting(
        "",
        "ROOST_LOG_DRAIN_CA",
        "controller: a PEM file of CA certificates trusted for TLS log drains, "
        "besides the system's ('' = the system's only)",
    )
    log_drain_queue: int = _setting(
        10000,
        "ROOST_LOG_DRAIN_QUEUE",
        "controller: lines waiting per log drain at most; past that the oldest are dropped",
    )
    log_drain_private: str = _setting(
        "off",
        "ROOST_LOG_DRAIN_PRIVATE",
        "controller: 'on' lets log drains reach loopback, private and link-local addresses; "
        "'off': public ones only (a tenant's drain must not write to the platform's services)",
    )
    rollout_timeout_s: float = _setting(
        180.0, "ROOST_ROLLOUT_TIMEOUT_S", "a release not up within this fails and is rolled back"
    )
    release_timeout_s: float = _setting(
        3600.0,
        "ROOST_RELEASE_TIMEOUT_S",
        "controller: longest a deploy's predeploy or release command, or its postdeploy, "
        "may run (Heroku's release phase: an hour); past it the command is stopped and "
        "a release command fails the deploy",
    )
    instance_memory_mb: int = _setting(
        256,
        "ROOST_INSTANCE_MEMORY_MB",
        "memory per instance: reserved when placing, and its cgroup's limit",
    )
    sandbox: str = _setting(
        "on",
        "ROOST_SANDBOX",
        "runner/builder: 'on' runs tenant code as per-app users in bubblewrap and cgroups "
        "(when root); 'off' runs it unconfined (development only)",
    )
    tenant_pids_max: int = _setting(
        512, "ROOST_TENANT_PIDS_MAX", "runner: processes and threads per instance or session"
    )
    tenant_cpu_weight: int = _setting(
        100, "ROOST_TENANT_CPU_WEIGHT", "runner: CPU weight of each instance (cgroup v2 scale)"
    )
    tenant_tmp_mb: int = _setting(
        256, "ROOST_TENANT_TMP_MB", "runner: size of a tenant process's private /tmp"
    )
    spare_after_s: float = _setting(
        600.0,
        "ROOST_SPARE_AFTER_S",
        "controller: a paired servicehost silent this long is replaced by a spare that "
        "answers, as `roost servicehost replace` does (controller/spare.py; 0: never)",
    )
    postgres_port: int = _setting(
        0, "ROOST_POSTGRES_PORT", "servicehost: PostgreSQL port (0 = pick a free one once, kept)"
    )
    postgres_start: str = _setting(
        "on-demand",
        "ROOST_POSTGRES_START",
        "servicehost: 'on-demand' starts the apps' PostgreSQL with the first database "
        "(and at the daemon's start once one exists or backupd streams it); 'always' at "
        "the daemon's start. A cluster's servicehost starts its own always",
    )
    postgres_connection_limit: int = _setting(
        20,
        "ROOST_POSTGRES_CONNECTION_LIMIT",
        "servicehost: connections each app's PostgreSQL role may hold at once",
    )
    pg_slot_wal_keep_mb: int = _setting(
        4096,
        "ROOST_PG_SLOT_WAL_KEEP_MB",
        "servicehost: most WAL (MB) PostgreSQL keeps for a replication slot whose receiver "
        "(a backupd) lags or is gone (max_slot_wal_keep_size); beyond it the slot is "
        "invalidated and backupd starts its window again, rather than the disk filling",
    )
    redis_memory_mb: int = _setting(
        16, "ROOST_REDIS_MEMORY_MB", "servicehost: app Redis maxmemory without [redis] memory"
    )
    sentinel_port: int = _setting(
        26379, "ROOST_SENTINEL_PORT", "servicehost pairs: Redis Sentinel's port on every host"
    )
    pair_stuck_after_s: float = _setting(
        60.0,
        "ROOST_PAIR_STUCK_AFTER_S",
        "servicehost pairs: how long a standby may run without streaming from a running "
        "primary before it is made again from it (its WAL gone, servicehost/pgrejoin.py)",
    )
    services_user: str = _setting(
        "roost-services", "ROOST_SERVICES_USER", "servicehost: user PostgreSQL/Redis run as (root)"
    )
    services_host: str = _setting(
        "", "ROOST_SERVICES_HOST", "servicehost: host apps connect to ('' = bind_host/127.0.0.1)"
    )
    backup_offsite: str = _setting(
        "",
        "ROOST_BACKUP_OFFSITE",
        "backupd: the offsite restic repository ('sftp:USER@HOST:/PATH' over OpenSSH with "
        "DATA/backupd/keys/id_ed25519, or 's3:...' with AWS_* set; '' = the local one only)",
    )
    backup_offsite_host_key: str = _setting(
        "",
        "ROOST_BACKUP_OFFSITE_HOST_KEY",
        "backupd: the SFTP offsite host's key ('ssh-ed25519 AAAA...') or its fingerprint "
        "('SHA256:...'), pinned on first contact; 'tofu' trusts the first key it offers",
    )
    backup_hour: int = _setting(
        3,
        "ROOST_BACKUP_HOUR",
        "backupd: UTC hour of the nightly dumps, base backups and data, git and platform snapshots",
    )
    backup_redis_hours: float = _setting(
        6.0, "ROOST_BACKUP_REDIS_HOURS", "backupd: hours between pulls of each app's Redis"
    )
    backup_check_days: float = _setting(
        7.0,
        "ROOST_BACKUP_CHECK_DAYS",
        "backupd: days between full integrity checks of each repository (restic check --read-data)",
    )
    backup_retry_s: float = _setting(
        600.0,
        "ROOST_BACKUP_RETRY_S",
        "backupd: a failed scheduled backup is tried again after this long (not at the next night)",
    )
    backup_copy_tries: int = _setting(
        5,
        "ROOST_BACKUP_COPY_TRIES",
        "backupd: tries to copy a backup to the offsite location (with backoff) before it is "
        "recorded there as failed",
    )
    backup_nice: int = _setting(
        10,
        "ROOST_BACKUP_NICE",
        "backupd: added to its niceness at start (its tools and scratch servers inherit it; its "
        "I/O priority drops to best-effort's lowest too), so apps on its machine come first",
    )
    backup_schedule: str = _setting(
        "on",
        "ROOST_BACKUP_SCHEDULE",
        "backupd: 'on' backs up on the schedule above; 'off' only when asked (captures before "
        "a change, `roost backups capture`)",
    )

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
        environ = dict(os.environ if environ is None else environ)
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(f.metadata["env"])
            if raw is None:
                continue
            kind: type = type(f.default)
            try:
                values[f.name] = kind(raw)
            except ValueError:
                raise ValueError(
                    f"{f.metadata['env']}={raw!r} is not a valid {kind.__name__}"
                ) from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return replace(cls(), **values)

    def to_env(self) -> dict[str, str]:
        """These settings as environment variables (`from_env` reads them back):
        how a daemon hands its exact settings to a process it starts."""
        return {f.metadata["env"]: str(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def describe(cls) -> list[tuple[str, str, Any, str]]:
        return [(f.name, f.metadata["env"], f.default, f.metadata["doc"]) for f in fields(cls)]


def parse_port_range(text: str) -> range:
    """`"FIRST-LAST"` (or one port) as a range; a clear ValueError otherwise."""
    first, sep, last = text.strip().partition("-")
    try:
        lo = int(first)
        hi = int(last) if sep else lo
    except ValueError:
        raise ValueError(f"port range {text!r} is not FIRST-LAST (e.g. 20000-29999)") from None
    if not 1 <= lo <= hi <= 65535:
        raise ValueError(f"port range {text!r} must satisfy 1 <= FIRST <= LAST <= 65535")
    return range(lo, hi + 1)
