"""The programs backupd runs, and the Debian packages they come in (what
`roost up` and `roost backupd` say to install when one is missing)."""

from __future__ import annotations

import shutil

TOOLS = {
    "restic": "restic",
    "barman": "barman",
    "redis-cli": "redis-tools",
    "redis-check-rdb": "redis-tools",
    "git": "git",
}


def missing_tools() -> list[str]:
    """The packages to install for the tools that are missing."""
    return sorted({pkg for tool, pkg in TOOLS.items() if shutil.which(tool) is None})
