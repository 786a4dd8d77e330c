"""Helpers shared by the test tiers."""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import stat
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import psutil
import pytest

from roost.cli.local import free_port as local_free_port
from roost.settings import Settings, parse_port_range

REPO = Path(__file__).resolve().parents[1]

# The test processes keep what they compile (pytest's rewritten test modules
# and the helpers they import) where PYTHONDONTWRITEBYTECODE is set (some
# sandboxes and CI images): every xdist worker collects every module, and
# each compiled them all from source in every run. Children are not
# changed: .venv and src are compiled by scripts/install.
sys.dont_write_bytecode = False


def free_port() -> int:
    """A port for a daemon a test starts, as `roost up` chooses its own: below
    the kernel's ephemeral range. One bound to 0 came from that range, and
    another test's outgoing connection given it first made the daemon's bind
    fail at every restart (scripts/demo's API port, in a four-worker run)."""
    return local_free_port()


def processes_under(data: Path) -> list[psutil.Process]:
    """Every process (but this one) whose command line or cwd mentions `data`:
    what a platform started there and left behind."""
    found = []
    for p in psutil.process_iter(["cmdline", "cwd"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            if str(data) in cmd or (p.info["cwd"] or "").startswith(str(data)):
                found.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return [p for p in found if p.pid != os.getpid()]


def _cpu_now() -> float:
    """CPU seconds of this thread and of this process's waited-for children."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.thread_time() + children.ru_utime + children.ru_stime


def wait_until(
    pred: Callable[[], object], timeout: float, what: str, interval: float = 0.2
) -> object:
    """Poll `pred` until it returns something truthy; fail the test with `what` otherwise.

    A look that cost CPU (a CLI run, a new TLS client: this thread's time
    and its children's) is followed by a pause as long, up to a second:
    polling stays near half a core however costly the look, where a look
    every 0.1 s of one costing 0.3 s kept a core busy for the whole wait
    (the suite's CPU, not its waits, bounds it on two cores). Capped: a
    daemon reaped during a look adds its whole life to its children's
    time."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        spent = _cpu_now()
        try:
            value = pred()
            if value:
                return value
        except Exception as exc:  # keep polling; report the last error
            last_exc = exc
        time.sleep(max(interval, min(_cpu_now() - spent, 1.0)))
    raise AssertionError(
        f"timed out after {timeout:.0f}s waiting for {what}"
        + (f" (last error: {last_exc})" if last_exc else "")
    )


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(autouse=True, scope="session")
def _quiet_env() -> None:
    os.environ.setdefault("UV_PYTHON_DOWNLOADS", "never")
    # Runners started in this network namespace must not touch the machine's
    # own nftables ruleset; tests/cluster (a namespace per host) and the
    # firewall's tests (tests/runner/test_firewall*.py) apply it in theirs.
    os.environ.setdefault("ROOST_FIREWALL", "off")
    # Each xdist worker's platforms give their instances ports of a slice
    # of their own: runners of platforms on different workers walked the
    # same range at once, one's instance bound a port the other's had just
    # found free, and the other's health check then passed on the wrong
    # app (test_pythons read another test's "Hello again, Roost!").
    os.environ.setdefault("ROOST_INSTANCE_PORTS", instance_ports_of_worker())


def instance_ports_of_worker(environ: Mapping[str, str] = os.environ) -> str:
    """This xdist worker's slice of the runners' default instance ports."""
    ports = parse_port_range(Settings().instance_ports)
    worker = environ.get("PYTEST_XDIST_WORKER", "")
    count = max(1, int(environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1))
    index = int(worker[2:]) % count if worker.startswith("gw") and worker[2:].isdigit() else 0
    size = len(ports) // count
    first = ports[0] + index * size
    return f"{first}-{first + size - 1}"


@pytest.fixture(autouse=True)
def _umask_kept() -> Iterator[None]:
    """Each test gives back the process umask it found: a command run in
    this process (CliRunner) may set a daemon's private one (077,
    `roost.daemonize`), and a later test on the same worker would then make
    directories the service users cannot walk into."""
    old = os.umask(0o022)
    os.umask(old)
    yield
    os.umask(old)


def remove_empty_tenant_cgroups(
    root: Path = Path("/sys/fs/cgroup"), older_than: float | None = None
) -> int:
    """Remove the empty `roost-*` cgroups daemons the tests SIGKILLed left
    (a daemon that stops removes its own; one killed cannot). Busy ones stay,
    and so do those made since `older_than` (a time.time()): a cgroup is
    empty between its mkdir and the first process joining it, and another
    test run on this machine may be at that point (its build step then
    failed to join: "Exception occurred in preexec_fn")."""
    removed = 0
    # os.walk, not Path.glob: a cgroup another run removes during the walk
    # must not fail this one (glob's scandir raised FileNotFoundError).
    bases: list[Path] = []
    for top, dirs, _ in os.walk(root, onerror=lambda _: None):
        found = [d for d in dirs if d.startswith("roost-")]
        bases += [Path(top, d) for d in found]
        dirs[:] = [d for d in dirs if not d.startswith("roost-")]
    for base in bases:
        if base.is_symlink():
            continue
        inner = [
            Path(top, d)
            for top, dirs, _ in os.walk(base, topdown=False, onerror=lambda _: None)
            for d in dirs
        ]
        for d in [*inner, base]:
            with contextlib.suppress(OSError):  # gone already, busy, or not a directory
                made = d.lstat()
                if not stat.S_ISDIR(made.st_mode):
                    continue
                if older_than is not None and made.st_mtime >= older_than:
                    continue
                d.rmdir()
                removed += 1
    return removed


_SESSION_START = time.time()


def remove_orphan_pg_segments(since: float, older_than: float, shm: Path = Path("/dev/shm")) -> int:
    """Remove the dynamic shared memory segments PostgreSQL servers the tests
    SIGKILLed left in /dev/shm (a server removes its own when it stops, or at
    its next start in the same data directory, which a test has deleted):
    those made since `since` and before `older_than` that no live process
    maps. Each is memory; a day of runs left 100 MB."""
    mapped: set[str] = set()
    prefix = f"{shm}/PostgreSQL."
    for maps in Path("/proc").glob("[0-9]*/maps"):
        with contextlib.suppress(OSError):
            mapped.update(
                line.rsplit(" ", 1)[-1] for line in maps.read_text().splitlines()
                if prefix in line
            )  # fmt: skip
    removed = 0
    for seg in shm.glob("PostgreSQL.*"):
        with contextlib.suppress(OSError):
            made = seg.stat().st_mtime
            if since <= made < older_than and str(seg) not in mapped:
                seg.unlink()
                removed += 1
    return removed


def remove_stale_weed_sockets(since: float, older_than: float, tmp: Path = Path("/tmp")) -> int:
    """Remove the unix sockets weed made in /tmp (whatever its flags: the
    master's, volume's and gateway's gRPC ones, a filer's) for the ports the
    tests' SeaweedFS processes had, once nothing answers on them: those made
    since `since` and before `older_than`. weed leaves them when it stops,
    and the tests' ports are random, so no later start on the same port
    clears them (roost.datadir.s3plan.grpc_sockets does, for a host's fixed
    ports); a day of runs left hundreds."""
    removed = 0
    for sock in tmp.glob("seaweedfs-*.sock"):
        with contextlib.suppress(OSError):
            st = sock.lstat()
            if not (stat.S_ISSOCK(st.st_mode) and since <= st.st_mtime < older_than):
                continue
            probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                probe.settimeout(1.0)
                probe.connect(str(sock))
                continue  # a live weed's
            except ConnectionRefusedError:
                sock.unlink()
                removed += 1
            finally:
                probe.close()
    return removed


# The longest modules, longest first (a clean-clone run's --durations, setup
# and calls summed per module, 2026-12, and each module's own time alone
# since; keep the list roughly true when a module grows or shrinks by a
# minute). Collected first, then the other real-process tiers, then the
# rest, each in its own order (the sort is stable).
SLOWEST_MODULES = (
    "tests/cluster/test_pair_spare_reboot.py",
    "tests/cluster/test_shared_datadir.py",
    "tests/cluster/test_servicehost_replace.py",
    "tests/cluster/test_backups.py",
    "tests/e2e/test_autorollback.py",
    "tests/cluster/test_redis_sentinel_cluster.py",
    "tests/cluster/test_pg_pair_failover.py",
    "tests/cluster/test_pg_pair_replace.py",
    "tests/cluster/test_statedb_failover.py",
    "tests/cluster/test_pg_pair_platform.py",
    "tests/cluster/test_shared_datadir_filers.py",
    "tests/e2e/test_platform_restore.py",
    "tests/cluster/test_pg_pair_rejoin.py",
    "tests/cluster/test_two_backupds.py",
    "tests/e2e/test_acme_pebble.py",
    "tests/e2e/test_up_takeover.py",
    "tests/e2e/test_host_restore.py",
    "tests/e2e/test_datadir_quota.py",
    "tests/cluster/test_cron_failover.py",
    "tests/cluster/test_pair_backups.py",
    "tests/cluster/test_upgrade_from_release.py",
    "tests/e2e/test_up_reload.py",
)
_REAL_PROCESS_DIRS = ("tests/cluster/", "tests/e2e/", "tests/backups/", "tests/datadir/")


def module_rank(nodeid: str) -> tuple[int, int]:
    """Where a test's module goes in the run: the slowest first."""
    module = nodeid.split("::", 1)[0]
    if module in SLOWEST_MODULES:
        return (0, SLOWEST_MODULES.index(module))
    for i, top in enumerate(_REAL_PROCESS_DIRS):
        if module.startswith(top):
            return (1, i)
    return (2, 0)


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The longest modules first. scripts/test hands whole modules to three
    workers (`--dist loadfile --no-loadscope-reorder`, in this order): a
    three-minute module handed out last would make its worker finish
    minutes after the others (xdist's own order, most tests first, puts
    every one-test module, the slowest among them, at the end; in the
    clean-clone run shorter ones followed them, and a simulation of the
    scheduler over its durations found this order within 20 s of it)."""
    items.sort(key=lambda item: module_rank(item.nodeid))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A skipped test fails the run: the suite is green only when everything ran.

    The skip markers name what a machine lacks (netns, the OpenSSH client,
    PostgreSQL) so the reason is printed; scripts/install provides all of
    it, so on a machine it set up nothing skips. ROOST_ALLOW_SKIPS=1 lets a
    developer without root run the rest.
    """
    if hasattr(session.config, "workerinput"):
        return  # a pytest-xdist worker: the controlling process sums up, once all ended
    if os.geteuid() == 0:
        remove_empty_tenant_cgroups(older_than=time.time() - 120)
        remove_orphan_pg_segments(_SESSION_START, time.time() - 120)
    # Seconds, not minutes: weed (Go's net.Listen) binds and listens at once,
    # so a socket nothing answers on is a stopped weed's, not a starting one's.
    remove_stale_weed_sockets(_SESSION_START, time.time() - 5)
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    skipped = len(reporter.stats.get("skipped", [])) if reporter is not None else 0
    if skipped and not os.environ.get("ROOST_ALLOW_SKIPS") and exitstatus == 0:
        reporter.write_sep(
            "!",
            f"{skipped} test(s) skipped: the run fails (the SKIPPED lines say why; "
            "ROOST_ALLOW_SKIPS=1 allows it)",
            red=True,
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
