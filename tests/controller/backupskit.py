"""Backup entries at a fixed time, for the backup health tests."""

from __future__ import annotations

import calendar

from roost.wire.messages import BackupEntry

H = 3600.0


NOW = float(calendar.timegm((2026, 3, 10, 12, 0, 0, 0, 0, 0)))


def entry(app: str, kind: str, age_h: float, state: str = "verified", **kw: object) -> BackupEntry:
    return BackupEntry(
        id=f"{kind}-{age_h}",
        app=app,
        kind=kind,
        taken_at=NOW - age_h * H,
        state=state,
        **kw,  # type: ignore[arg-type]
    )
