"""Where the servicehost keeps things, under DATA/servicehost/.

state.json            ports, passwords, memory limits (0600; see state.py)
postgres/             the PostgreSQL cluster (PGDATA), owned by the service user
redis/<app>/          one Redis server: redis.conf, appendonly files, dump.rdb
backups/<app>/        <kind>-<UTC timestamp>.dump|.rdb (final and on-demand)
kept/<app>/           redis-<id>/, data-<id>/: what a restore replaced (restores.py)
staging/              a restore's RDB while it is checked
logs/                 postgres.log, redis-<app>.log (the servers' own output)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from roost.servicehost.names import check_app


@dataclass(frozen=True)
class Layout:
    data_dir: Path

    @property
    def root(self) -> Path:
        return self.data_dir / "servicehost"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def postgres(self) -> Path:
        return self.root / "postgres"

    @property
    def redis_root(self) -> Path:
        return self.root / "redis"

    def redis(self, app: str) -> Path:
        return self.redis_root / check_app(app)

    @property
    def backups_root(self) -> Path:
        return self.root / "backups"

    def backups(self, app: str) -> Path:
        return self.backups_root / check_app(app)

    @property
    def kept_root(self) -> Path:
        return self.root / "kept"

    def kept(self, app: str) -> Path:
        return self.kept_root / check_app(app)

    @property
    def staging(self) -> Path:
        return self.root / "staging"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def create(self, searchable: bool) -> None:
        """Make the directories; `searchable`: the servers run as another user."""
        for d in (self.root, self.redis_root, self.backups_root, self.logs):
            d.mkdir(parents=True, exist_ok=True)
        for d in (self.kept_root, self.staging):
            d.mkdir(mode=0o700, exist_ok=True)
        if searchable:
            # Searchable but not listable: the service user must walk down to
            # its own directories; backups and state stay private to the daemon.
            for d in (self.data_dir, self.root, self.redis_root):
                os.chmod(d, os.stat(d).st_mode | 0o111)
        os.chmod(self.backups_root, 0o700)
        os.chmod(self.logs, 0o700)
        # The staged RDB is checked by redis-check-rdb as the service user.
        os.chmod(self.staging, 0o711 if searchable else 0o700)
