"""Running a tool to completion (roost.proc.run), for real."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

import psutil
import pytest

from roost.proc.run import run_tool

PY = sys.executable
# A tool that starts a grandchild in its own group, writes its pid, and waits.
FAMILY = ["sh", "-c", 'sleep 600 & echo $! > "$0"; wait']
PATH = {"PATH": "/usr/bin:/bin"}


async def test_output_is_captured_apart_or_merged_in_the_given_environment() -> None:
    code = (
        "import os, sys; print(os.environ.get('A'), os.environ.get('HOME')); sys.stderr.write('e')"
    )
    done = await run_tool([PY, "-c", code], timeout=60, env={"A": "1"})
    assert (done.returncode, done.stdout, done.stderr) == (0, b"1 None\n", "e")
    merged = await run_tool(
        [PY, "-c", code + "; sys.exit(3)"], timeout=60, env={}, merge_stderr=True
    )
    assert (merged.returncode, merged.output, merged.stderr) == (3, "None None\ne", "")


async def _family_gone(marker: Path) -> None:
    try:
        grandchild = psutil.Process(int(marker.read_text()))
    except psutil.NoSuchProcess:
        return
    await asyncio.to_thread(grandchild.wait, 10)  # killed with the tool's group


async def test_out_of_time_the_tool_and_its_group_are_stopped(tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    with pytest.raises(TimeoutError):
        await run_tool([*FAMILY, str(marker)], timeout=3, env=PATH)
    await _family_gone(marker)


async def test_a_cancelled_caller_leaves_nothing_behind(tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    task = asyncio.create_task(run_tool([*FAMILY, str(marker)], timeout=600, env=PATH))
    while not marker.exists() or not marker.read_text():
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await _family_gone(marker)


async def test_the_stop_signal_and_its_grace_let_a_tool_clean_up(tmp_path: Path) -> None:
    # As restic removes its lock on SIGINT: the tool is given the signal and time.
    cleaned = tmp_path / "cleaned"
    code = 'trap "sleep 0.5; echo yes > $0; exit 1" INT; sleep 600 >/dev/null 2>&1 & wait'
    with pytest.raises(TimeoutError):
        await run_tool(
            ["sh", "-c", code, str(cleaned)],
            timeout=3, env=PATH, stop_signal=signal.SIGINT, grace_s=30,
        )  # fmt: skip
    assert cleaned.read_text() == "yes\n"
