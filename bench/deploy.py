"""Deploy benchmark (issue 19): what replacing a release costs the visitors.

On one `roost up` (tests/e2e/platform.py's harness; root: the platform's
sandboxes), examples/hello with its two web instances. Each measurement is a
function of its own taking the platform and a work directory and returning
its figures; `main` runs them in order on one platform and prints every
figure, one `name value` line each.

(1) `deploy_under_load`: steady HTTP load through the router
    (tests/e2e/load.py: keep-alive clients and clients opening a connection
    per request, GET / back to back), first for a window with no deploy,
    then from the start of a redeploy (a one-line change: build, roll out,
    promote, drain, stop the old instances) until a few seconds after the
    old instances are gone. Per round, each window's 99th-percentile
    latency; over the rounds:

      deploy_failed_requests  requests of the deploy windows that failed
                              (no 200 with the app's page: errors, 502/503s)
      deploy_p99_ratio        p99 during the deploy over p99 of the same
                              load with no deploy (median of the rounds)

    Targets: 0 failed; ratio <= 2. The build and the new instances' start
    share the machine with the load, the router and the instances serving
    it: on one host their CPU is part of what a deploy costs.

(2) `push_to_live` (bench/pushlive.py, which runs alone too): a one-line
    change's `git push` until the new release answers through the router,
    against a bare `uv venv` + `uv pip sync --offline` of the same lock and
    a gunicorn start of the same app, alternated, medians:

      push_to_live_s        seconds from `git push` to the change answering
      push_to_live_vs_bare  that over the bare steps' time

    Targets: <= 1 s, <= 1.5.

`--quick`: one round, shorter windows, 3 pushes instead of 7.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from pushlive import push_to_live  # noqa: E402
from tests.conftest import wait_until  # noqa: E402
from tests.e2e.load import Load, LoadResult  # noqa: E402
from tests.e2e.platform import Platform, running_platform  # noqa: E402

APP = "deploybench"
GREETING = "Hello from Roost!"

Figures = dict[str, float]
Measurement = Callable[[Platform, Path, bool], Figures]


def say(msg: str) -> None:
    print(f"# {msg}", flush=True)


def _load(platform: Platform) -> Load:
    return Load(
        platform.router_port,
        f"{APP}.localhost",
        keep_alive=3,
        fresh=2,
        accept=lambda body: body.startswith("Hello"),
    )


def _steady(platform: Platform, seconds: float) -> LoadResult:
    load = _load(platform)
    with load:
        time.sleep(seconds)
    return load.result


def _redeploy(platform: Platform, app_dir: Path, n: int, after_s: float) -> LoadResult:
    """The load from a redeploy's start until `after_s` after its old instances left."""
    app_py = app_dir / "app.py"
    text = app_py.read_text()
    app_py.write_text(text.replace(GREETING, f"{GREETING} ({n})", 1))
    load = _load(platform)
    with load:
        r = platform.roost("deploy", str(app_dir), "--app", APP)
        assert "is live" in r.stdout, r.stdout
        live = max(int(i["release"]) for i in platform.ps(APP))  # type: ignore[call-overload]
        wait_until(
            lambda: {i["release"] for i in platform.ps(APP)} == {live},
            120,
            "the old instances to leave",
        )
        time.sleep(after_s)
    app_py.write_text(text)
    return load.result


def deploy_under_load(platform: Platform, work: Path, quick: bool) -> Figures:
    """Measurement (1): see the module docstring."""
    rounds, steady_s, after_s = (1, 10.0, 3.0) if quick else (3, 30.0, 5.0)
    app_dir = work / APP
    shutil.copytree(REPO / "examples" / "hello", app_dir)
    platform.roost("apps", "create", APP)
    platform.roost("deploy", str(app_dir), "--app", APP)
    wait_until(lambda: platform.get(APP).status_code == 200, 60, "the first release")
    _steady(platform, 2.0)  # warm-up: connections, the instances' first requests
    failed = 0
    ratios: list[float] = []
    for n in range(1, rounds + 1):
        calm = _steady(platform, steady_s)
        during = _redeploy(platform, app_dir, n, after_s)
        failed += len(during.failures)
        p99_calm, p99_during = calm.percentile(99), during.percentile(99)
        ratios.append(p99_during / p99_calm if p99_calm else float("inf"))
        say(
            f"round {n}: steady {calm.total} requests (p99 {p99_calm * 1000:.1f} ms, "
            f"{len(calm.failures)} failed); deploy {during.total} requests "
            f"(p99 {p99_during * 1000:.1f} ms, {len(during.failures)} failed)"
        )
        for failure in during.failures[:5]:
            say(f"  failed: {failure}")
    return {"deploy_failed_requests": failed, "deploy_p99_ratio": statistics.median(ratios)}


# In the order they run and print; each adds its own figures.
MEASUREMENTS: list[Measurement] = [deploy_under_load, push_to_live]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one round, shorter windows")
    args = parser.parse_args()
    figures: Figures = {}
    work = Path(tempfile.mkdtemp(prefix="roost-bench-deploy-"))
    work.chmod(0o755)  # the builder's unprivileged user reads the app from here
    try:
        with running_platform() as platform:
            for measure in MEASUREMENTS:
                figures.update(measure(platform, work, args.quick))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for name, value in figures.items():
        print(f"{name} {value:g}" if isinstance(value, float) else f"{name} {value}")


if __name__ == "__main__":
    main()
