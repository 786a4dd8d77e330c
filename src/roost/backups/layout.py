"""Where backupd keeps things, under DATA/backupd/ (0700, root's or the daemon's).

keys/restic.key       the repositories' password (0600); never on a servicehost
keys/id_ed25519       backupd's SSH key for SFTP locations (its .pub is what an
                      offsite host authorises); keys/known_hosts pins their host keys
barman/               Barman's home: barman.conf, its server's config, base
                      backups and WAL (pulled with pg_basebackup/pg_receivewal)
staging/<app>/        what was pulled for one backup, before it goes into restic
catalog/<id>.json     one BackupEntry each (what was taken, facts, drill verdict)
policy.json           per-app retention policies
repo/                 the local restic repository (location "local")
scratch/              scratch PostgreSQL and Redis servers for drills and restores
logs/                 Barman's and the scratch servers' own output
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    data_dir: Path

    @property
    def root(self) -> Path:
        return self.data_dir / "backupd"

    @property
    def keys(self) -> Path:
        return self.root / "keys"

    @property
    def restic_password(self) -> Path:
        return self.keys / "restic.key"

    @property
    def ssh_key(self) -> Path:
        return self.keys / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.keys / "known_hosts"

    @property
    def barman(self) -> Path:
        return self.root / "barman"

    @property
    def staging(self) -> Path:
        return self.root / "staging"

    @property
    def catalog(self) -> Path:
        return self.root / "catalog"

    @property
    def policy_file(self) -> Path:
        return self.root / "policy.json"

    @property
    def local_repo(self) -> Path:
        return self.root / "repo"

    @property
    def scratch(self) -> Path:
        return self.root / "scratch"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def create(self) -> None:
        """Make the directories, private to the daemon (0700), but for the
        search bit scratch.make_reachable gives others on DATA/backupd and
        scratch/ (the scratch servers' user walks down to its own
        directory): that stays, or a drill starting its scratch server while
        Barman's configuration is rewritten (which calls this) loses its
        way ("could not open pg_control: Permission denied")."""
        for d in (self.root, self.keys, self.barman, self.staging, self.catalog, self.scratch,
                  self.logs):  # fmt: skip
            keep = 0
            if d in (self.root, self.scratch) and d.exists():
                keep = d.stat().st_mode & 0o011
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o700 | keep)
