"""Fill the zygote's free small-object slots before it forks (issue 21).

CPython's small-object allocator (pymalloc) serves every object of up to 512
bytes from 16 KiB pools, one size class per pool, and hands out a free slot
of a pool already in use before it starts a new one. After the zygote's
imports, a few thousand such slots lie free, scattered over a thousand-odd
pools whose other slots hold the base every role shares. A forked role's
first new objects went into those slots, and each one written copied the
whole page around it: ~1 MB per role of copied base pages for objects that
would fit in a tenth of that (measured by /proc/PID/pagemap against the
zygote's pages; the sum of PSS fell ~5 MB with this).

So the zygote takes every such slot itself: it reads how many each size
class has (`sys._debugmallocstats`, CPython's own report) and makes that
many objects of the class's size, kept for its life (they are a few hundred
KB, shared with every role and never written again). A role then starts its
own objects in pools of its own. What is left free afterwards is the tail
of a fresh pool, whose pages no one has touched yet, so copy nothing.
Where the report is not there (another interpreter, PYTHONMALLOC=malloc)
nothing is filled: the fork is only as it was.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

# A row of the report's size-class table: class, size, pools, in use, free.
_ROW = re.compile(r"^\s*\d+\s+(\d+)\s+\d+\s+\d+\s+(\d+)\s*$")
# bytes objects are 33 bytes and their length (header, data, a NUL).
_BYTES_OVERHEAD = 33


def free_slots(report: str) -> dict[int, int]:
    """{block size: free slots in pools in use} from the report's table."""
    out: dict[int, int] = {}
    for line in report.splitlines():
        m = _ROW.match(line)
        if m and int(m.group(2)):
            out[int(m.group(1))] = int(m.group(2))
    return out


def malloc_report() -> str:
    """`sys._debugmallocstats()`'s text (written to fd 2 by C), or ""."""
    stats = getattr(sys, "_debugmallocstats", None)
    if stats is None:
        return ""
    with tempfile.TemporaryFile() as out:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(out.fileno(), 2)
            stats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        return out.read().decode(errors="replace")


def filler(size: int, i: int) -> object:
    """A new object whose allocation is of `size` bytes' class."""
    if size <= 16:
        return object()  # 16 bytes
    if size <= 32:
        return (1 << 40) + i  # an int of two digits: 32 bytes, not cached
    return bytes(size - _BYTES_OVERHEAD)


def fill() -> list[object]:
    """Take every free slot of the pools in use; keep what is returned."""
    slots = free_slots(malloc_report())
    # Made before the objects, so that its own array is not one of them.
    kept: list[object] = [None] * sum(slots.values())
    k = 0
    for size, n in slots.items():
        for i in range(n):
            kept[k] = filler(size, i)
            k += 1
    return kept
