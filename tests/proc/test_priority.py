"""A daemon lowers its own priority and everything it starts inherits it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from roost.proc.priority import IOPRIO_BE_LOWEST, IOPRIO_CLASS_BE, ioprio_value

CHILD = """
import subprocess, sys
from roost.proc.priority import lower_own_priority
print(lower_own_priority(7), flush=True)
# A child started afterwards: its niceness and I/O priority, as the kernel says.
out = subprocess.run(["sh", "-c", "cut -d' ' -f19 /proc/$$/stat; ionice -p $$"],
                     capture_output=True, text=True, check=True).stdout
print(out, end="")
"""


def test_the_encoding_is_the_kernels() -> None:
    assert ioprio_value(IOPRIO_CLASS_BE, IOPRIO_BE_LOWEST) == (2 << 13) | 7
    with pytest.raises(ValueError):
        ioprio_value(IOPRIO_CLASS_BE, 8)


def test_lowered_at_start_and_inherited_by_children() -> None:
    before = subprocess.run(
        ["sh", "-c", "cut -d' ' -f19 /proc/$$/stat"], capture_output=True, text=True, check=True
    ).stdout.strip()
    out = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert out[0] == "[]"  # nothing it could not do
    assert int(out[1]) == min(19, int(before) + 7)
    assert out[2] == "best-effort: prio 7"
