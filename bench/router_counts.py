"""What the dashboard's per-app latency costs the router's request path.

Not a test: it prints numbers. `RequestCounts.record` runs once per request
(roost.router.stats, compiled with Cython). Since the dashboard's charts it
also counts each app's latency bucket (one more dict update). This compiles
the counter as it is now and as it was before that change (from git, the
parent of the commit that added `app_latency`), both with the router's own
Cython directives, and times `record` over the same mix of requests
(several apps, most answered within 5 ms, a tail up to seconds), in
interleaved rounds, keeping each one's median. Prints nanoseconds per
request and the ratio now/before.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent
STATS = "src/roost/router/stats"


def before_change() -> str:
    """The commit before the one that added per-app latency to the counter."""
    added = subprocess.run(
        ["git", "log", "--format=%H", "--reverse", "-S", "app_latency", "--", f"{STATS}.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    if not added:
        raise SystemExit("no commit added app_latency to the router's counter")
    return f"{added[0]}~1"


def source(rev: str | None, suffix: str) -> str:
    if rev is None:
        return (ROOT / f"{STATS}{suffix}").read_text()
    return subprocess.run(
        ["git", "show", f"{rev}:{STATS}{suffix}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def compile_counter(name: str, rev: str | None, tmp: Path) -> ModuleType:
    """stats.py and stats.pxd of `rev` (None: the working tree) compiled as
    module `name`, as scripts/build-ext compiles them."""
    from Cython.Build import cythonize
    from setuptools import Distribution, Extension

    (tmp / f"{name}.py").write_text(source(rev, ".py"))
    (tmp / f"{name}.pxd").write_text(source(rev, ".pxd"))
    ext = Extension(name, [str(tmp / f"{name}.py")], extra_compile_args=["-O2"])
    modules = cythonize(
        [ext],
        quiet=True,
        language_level=3,
        compiler_directives={
            "annotation_typing": False,
            "boundscheck": False,
            "wraparound": True,
            "embedsignature": False,
        },
    )
    dist = Distribution({"name": name, "ext_modules": modules})
    cmd = dist.get_command_obj("build_ext")
    cmd.build_temp = str(tmp / f"build-{name}")
    cmd.build_lib = str(tmp)
    cmd.ensure_finalized()
    cmd.run()
    spec = importlib.util.spec_from_file_location(name, cmd.get_ext_fullpath(name))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not module.__file__ or not module.__file__.endswith(".so"):
        raise SystemExit(f"{name} did not compile")
    return module


def requests(n: int) -> list[tuple[bytes, int, float]]:
    rng = random.Random(18)
    apps = [f"app{i}".encode() for i in range(50)]
    out = []
    for _ in range(n):
        roll = rng.random()
        seconds = rng.uniform(0, 0.005) if roll < 0.8 else rng.expovariate(1 / 0.2)
        status = 200 if rng.random() < 0.95 else rng.choice((301, 404, 502))
        out.append((rng.choice(apps), status, seconds))
    return out


def per_request_ns(module: ModuleType, load: list[tuple[bytes, int, float]]) -> float:
    counts = module.RequestCounts()
    record = counts.record
    started = time.perf_counter_ns()
    for app, status, seconds in load:
        record(app, status, seconds)
    return (time.perf_counter_ns() - started) / len(load)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    args = ap.parse_args()
    n, rounds = (200_000, 5) if args.quick else (1_000_000, 15)
    rev = before_change()
    with tempfile.TemporaryDirectory(prefix="roost-bench-counts-") as tmp:
        print(f"compiling the counter now and at {rev} ...", file=sys.stderr)
        now = compile_counter("counts_now", None, Path(tmp))
        before = compile_counter("counts_before", rev, Path(tmp))
        load = requests(n)
        timings: dict[str, list[float]] = {"before": [], "now": []}
        for _ in range(rounds):  # interleaved: both see the machine's load of the moment
            timings["before"].append(per_request_ns(before, load))
            timings["now"].append(per_request_ns(now, load))
    b, a = statistics.median(timings["before"]), statistics.median(timings["now"])
    print(f"RequestCounts.record, compiled, {n} requests x {rounds} rounds (median):")
    print(f"  before per-app latency: {b:6.1f} ns/request")
    print(f"  now:                    {a:6.1f} ns/request")
    print(f"  ratio now/before: {a / b:.2f} ({a - b:+.1f} ns a request)")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    main()
