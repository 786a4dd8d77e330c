"""roost.cli.zygote_fill: the zygote takes its free small-object slots before forking."""

from __future__ import annotations

import sys

import pytest

from roost.cli import zygote_fill

REPORT = """Small block threshold = 512, in 32 size classes.

class   size   num pools   blocks in use  avail blocks
-----   ----   ---------   -------------  ------------
    0     16           1             956            65
    1     32          18            8647             0
    2     48          85           26416          2484
   31    512          10             284            26

# arenas allocated total           =                   20
# bytes in available blocks        =              474,912
24 unused pools * 16384 bytes      =              393,216
"""


def test_free_slots_reads_the_size_class_table_only() -> None:
    assert zygote_fill.free_slots(REPORT) == {16: 65, 48: 2484, 512: 26}
    assert zygote_fill.free_slots("") == {}


@pytest.mark.parametrize("size", range(16, 513, 16))
def test_each_filler_is_of_its_size_class(size: int) -> None:
    # pymalloc rounds a request up to a multiple of 16: a filler's size must
    # fall in (size - 16, size].
    assert size - 16 < sys.getsizeof(zygote_fill.filler(size, 7)) <= size


def test_fill_takes_the_free_slots_scattered_over_pools_in_use() -> None:
    # Free slots over many pools of the 64-byte class: every other one of
    # 20,000 objects freed.
    objs = [bytes(64 - 33) for _ in range(20_000)]
    del objs[::2]
    before = zygote_fill.free_slots(zygote_fill.malloc_report()).get(64, 0)
    assert before >= 10_000
    kept = zygote_fill.fill()
    after = zygote_fill.free_slots(zygote_fill.malloc_report()).get(64, 0)
    # What is left is at most the untouched tail of one fresh pool.
    assert after < 16384 // 64
    assert len(kept) >= before
