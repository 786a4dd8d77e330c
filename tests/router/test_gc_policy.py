"""A router worker's garbage collection once it serves (daemon.settle_gc):
what it holds from its start is frozen out of collections, garbage from the
start is collected rather than frozen, and collections wait for more young
objects. In a child process: the policy is a process's, not pytest's."""

from __future__ import annotations

import json
import subprocess
import sys

from roost.router.daemon import GC_YOUNG

PROBE = """
import gc, json, weakref
from roost.router.daemon import settle_gc
class Node:
    pass
a, b = Node(), Node()
a.other, b.other = b, a  # a cycle only the collector frees
gone = weakref.ref(a)
del a, b
kept = [Node() for _ in range(100)]
settle_gc()
walked = {id(o) for o in gc.get_objects()}  # (frozen objects are in no generation)
print(json.dumps({
    "frozen": gc.get_freeze_count(),
    "young_now": gc.get_count()[0],
    "threshold": gc.get_threshold(),
    "cycle_freed": gone() is None,
    "kept_frozen": not any(id(k) in walked for k in kept),
}))
"""


def test_settle_gc_freezes_the_start_and_collects_its_garbage() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    got = json.loads(out.stdout)
    assert got["cycle_freed"]  # collected, not frozen with the rest
    assert got["kept_frozen"]  # live objects from before are out of the collector's walks
    assert got["frozen"] > 10_000  # the modules' objects, and the live ones made here
    assert got["young_now"] < 100
    assert got["threshold"][0] == GC_YOUNG > 700
