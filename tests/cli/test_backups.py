"""`roost backups`: how backups are shown, and what is refused before anyone is asked."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from rich.console import Console

from roost.cli.backups import entries_table, not_configured, size, stamp, where
from roost.cli.client import EXIT_ERROR
from roost.cli.main import cli


def test_sizes_times_and_locations_read_plainly() -> None:
    assert [size(n) for n in (0, 1023, 1024, 5 << 20, 3 << 30, 5 << 40)] == [
        "0 B", "1023 B", "1.0 KB", "5.0 MB", "3.0 GB", "5120.0 GB",
    ]  # fmt: skip
    assert stamp(0) == "-" and stamp(1_780_000_000) == "2026-05-28T20:26:40Z"
    assert where({"offsite": "error: unreachable", "local": "ok"}) == (
        "local: ok, offsite: error: unreachable"
    )


def test_an_id_is_shown_whole_even_on_a_narrow_terminal() -> None:
    entry = {
        "id": "pgdump-20260528T202640Z-a1b2c3", "app": "shop", "kind": "pgdump",
        "taken_at": 1_780_000_000, "reason": "pre-release", "size": 2048,
        "state": "failed", "message": "drill: notes: 2 rows, 3 when taken",
        "locations": {"local": "ok"},
    }  # fmt: skip
    console = Console(width=60, record=True)
    console.print(entries_table([entry], with_app=True))
    rows = [line.split("│") for line in console.export_text().splitlines() if "│" in line]

    def column(i: int) -> str:  # a folded cell, read down again
        return "".join(r[i].strip() for r in rows)

    assert "…" not in console.export_text()
    assert column(2) == "pgdump-20260528T202640Z-a1b2c3"
    assert column(7) == "failed:drill:notes: 2rows, 3whentaken"


def test_a_restore_needs_exactly_one_of_id_and_at_and_a_time_to_the_second(
    tmp_path: Path,
) -> None:
    runner = CliRunner()
    base = ["--data", str(tmp_path), "backups", "restore", "shop", "--yes"]
    for extra, said in (
        ([], "give exactly one of --id and --at"),
        (["--id", "x", "--at", "2026-01-01T00:00:00Z"], "give exactly one of --id and --at"),
        (["--at", "yesterday"], "is not ISO 8601"),
        (["--at", "2026-01-01T00:00:00.5Z"], "give the time to the second"),
    ):
        r = runner.invoke(cli, base + extra)
        assert r.exit_code == 2 and said in r.output, r.output


def test_no_backupd_is_said_in_red_and_is_no_success(capsys: pytest.CaptureFixture[str]) -> None:
    not_configured({"configured": True, "entries": []})  # (a backupd: nothing said)
    with pytest.raises(SystemExit) as exited:
        not_configured({"configured": False, "message": "no backupd is configured"})
    assert exited.value.code == EXIT_ERROR
    assert "no backupd is configured" in capsys.readouterr().out
