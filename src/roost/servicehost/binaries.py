"""Where the PostgreSQL and Redis server binaries are.

PostgreSQL comes from the OS packages: Debian/Ubuntu keep the server binaries
in /usr/lib/postgresql/<major>/bin (only wrappers are on PATH), other
systems put them on PATH. The newest major version found wins.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

INSTALL_HINT = (
    "install them from the OS packages, e.g. `apt-get install -y postgresql redis-server` "
    "(Debian/Ubuntu) or `dnf install -y postgresql-server redis` (Fedora)"
)
PG_TOOLS = ("initdb", "postgres", "pg_dump", "pg_restore")


class MissingBinaries(RuntimeError):
    """The servicehost cannot run: server binaries are not installed."""


@dataclass(frozen=True)
class Binaries:
    pg_bin: Path  # directory holding initdb, postgres, pg_dump, pg_restore (and psql)
    redis_server: Path

    def pg(self, tool: str) -> str:
        return str(self.pg_bin / tool)

    def redis_tool(self, tool: str) -> str:
        """A tool of the Redis package (redis-check-rdb): beside the server, else on PATH."""
        beside = self.redis_server.parent / tool
        if os.access(beside, os.X_OK):
            return str(beside)
        return shutil.which(tool) or tool


def _major(path: Path) -> tuple[int, ...]:
    return tuple(int(x) for x in re.findall(r"\d+", path.name)) or (0,)


def find_pg_bin(roots: tuple[str, ...] = ("/usr/lib/postgresql", "/usr/pgsql")) -> Path | None:
    candidates: list[Path] = []
    for root in roots:
        base = Path(root)
        if base.is_dir():
            candidates += [p / "bin" for p in base.iterdir() if (p / "bin").is_dir()]
    # Fedora/RHEL style: /usr/pgsql-16/bin
    candidates += [p / "bin" for p in Path("/usr").glob("pgsql-*") if (p / "bin").is_dir()]
    candidates.sort(key=lambda b: _major(b.parent), reverse=True)
    for cand in candidates:
        if all(os.access(cand / t, os.X_OK) for t in PG_TOOLS):
            return cand
    on_path = shutil.which("postgres")
    if on_path:
        # Resolve symlinks so sibling tools of the same version are used.
        real = Path(on_path).resolve().parent
        if all(os.access(real / t, os.X_OK) for t in PG_TOOLS):
            return real
    return None


def find_binaries() -> Binaries:
    """The server binaries, or MissingBinaries saying what to install."""
    pg = find_pg_bin()
    redis = shutil.which("redis-server") or (
        "/usr/bin/redis-server" if os.access("/usr/bin/redis-server", os.X_OK) else None
    )
    missing = [n for n, v in (("PostgreSQL", pg), ("Redis", redis)) if v is None]
    if missing or pg is None or redis is None:
        raise MissingBinaries(f"{' and '.join(missing)} server binaries not found; {INSTALL_HINT}")
    return Binaries(pg_bin=pg, redis_server=Path(redis))


def missing_hint() -> str | None:
    """For `roost up`: None when the servicehost can run, else what to install."""
    try:
        find_binaries()
    except MissingBinaries as exc:
        return str(exc)
    return None
