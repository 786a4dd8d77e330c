"""Cron exactly once while the lease holder keeps dying.

Real processes on one machine: two controllers (`roost controller`, each its
own key and ports) sharing a PostgreSQL state database, and one runner
(`roost runner`, sandboxed as always). An app's cron job runs every slot; the
slot is shortened to SLOT_S seconds (ROOST_CRON_SLOT_SECONDS) so that 30
slots take a minute. The controller holding the scheduler lease is SIGKILLed
at random points around slot boundaries (before it claims, between the claim
and RunStart, while the job runs), and started again at once. Every slot
must run exactly once: the job appends its slot to a file in the app's data
directory, prints it once to its log, and every claim ends succeeded.

The random points come from a seeded generator; the seed is printed
(ROOST_CRON_SEED=N reruns one).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import sqlalchemy

from roost.appspec.model import AppSpec, CronJob
from roost.cli.local import prepare_cluster
from roost.controller.store import Store
from roost.images.store import ImageStore
from roost.runner.layout import Layout
from roost.state.db import make_engine, migrate
from roost.wire.cluster import ClusterConfig, Endpoint
from roost.wire.identity import ensure_member, identity
from tests.appdata import app_data_dir
from tests.conftest import free_port, processes_under, wait_until
from tests.pgserver import postgres_server
from tests.releases import go_live
from tests.runner.helpers import make_image_root

pytestmark = pytest.mark.e2e

SLOT_S = 1.5
SLOTS = 30
MIN_KILLS = 6
APP = "clock"
# Runs across a slot boundary now and then (a kill lands mid-job), and says
# which slot it is for: on its output, and in a file only it writes.
JOB = 'sleep 0.4; echo "ran $ROOST_CRON_TIME"; echo "$ROOST_CRON_TIME" >> "$ROOST_DATA_DIR/slots"'
CONTROLLERS = ("controller", "controller2")


class CronWorld:
    """The processes, their logs and the shared state database."""

    def __init__(self, base: Path, url: str) -> None:
        self.base = base
        self.data = base / "data"
        self.url = url
        self.engine = make_engine(url)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports = {name: free_port() for name in CONTROLLERS}
        self.env = {
            **os.environ,
            "ROOST_CRON_SLOT_SECONDS": str(SLOT_S),
            "ROOST_LEASE_TTL_S": "2",
            "ROOST_HEARTBEAT_S": "0.3",
            "ROOST_LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
        }

    def prepare(self) -> None:
        """Keys and address book for two controllers and a runner; the app and its release."""
        prepare_cluster(self.data, "127.0.0.1")
        keys = self.data / "keys"
        second = ensure_member(keys, "controller2", identity("controller", "ctl2"))
        path = self.data / "cluster.json"
        book = ClusterConfig.load(path)
        # Only what runs here: no builder, no servicehost to wait for.
        eps = {role: book.of(role) for role in ("controller", "controller-pub")}
        for role in eps:
            eps[role].append(Endpoint(f"tcp://127.0.0.1:{free_port()}", second.public_text))
        ClusterConfig(name=book.name, endpoints=eps, state_url=self.url).save(path)
        migrate(self.url)
        store = Store(self.engine)
        owner = store.create_account("cron@example.com")
        app = store.create_app(APP, owner)
        spec = AppSpec(cron=[CronJob(command=JOB, schedule="* * * * *")])
        version = store.create_release(app.id, "b1", self.image(), "", spec, "", "cron test")
        go_live(store, app.id, version)

    def image(self) -> str:
        """An image already in the runner's own store: it needs no builder."""
        root = make_image_root(self.base / "image", {"README": "tick\n"})
        archive = self.base / "image.tar"
        with tarfile.open(archive, "w") as tf:
            for name in ("app", "venv", "roost-image.json"):
                tf.add(root / name, arcname=name)
        return ImageStore(Layout(self.data).store).put_file(archive)

    def start(self, name: str) -> None:
        role = "controller" if name in CONTROLLERS else name
        argv = [sys.executable, "-m", "roost", "--data", str(self.data), role]
        if name in CONTROLLERS:
            argv += ["--name", name, "--api-port", str(self.ports[name])]
        log = open(self.base / f"{name}.log", "ab")  # noqa: SIM115 - the child holds it
        with log:
            self.procs[name] = subprocess.Popen(argv, env=self.env, stdout=log, stderr=log)

    def up(self, name: str) -> bool:
        try:
            url = f"http://127.0.0.1:{self.ports[name]}/api/health"
            return httpx.get(url, timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def holder(self) -> str | None:
        """The controller holding the scheduler lease, by the holder id it wrote."""
        with self.engine.connect() as c:
            row = c.execute(
                sqlalchemy.text("SELECT holder, expires_at FROM leases WHERE name = 'scheduler'")
            ).first()
        if row is None or row.expires_at < time.time():
            return None
        name, pid = row.holder.split(":")[:2]
        proc = self.procs.get(name)
        return name if proc is not None and proc.pid == int(pid) and proc.poll() is None else None

    def claims(self) -> dict[int, tuple[str, str]]:
        with self.engine.connect() as c:
            rows = c.execute(sqlalchemy.text("SELECT slot, state, status FROM cron_claims"))
            return {r.slot: (r.state, r.status) for r in rows}

    def ran_lines(self) -> list[str]:
        with self.engine.connect() as c:
            rows = c.execute(
                sqlalchemy.text("SELECT line FROM log_lines WHERE line LIKE 'ran %' ORDER BY id")
            )
            return [r.line for r in rows]

    def slots_file(self) -> list[int]:
        path = app_data_dir(self.data, APP) / "slots"
        text = path.read_text() if path.exists() else ""
        return [int(x) // 60 for x in text.split()]

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self.engine.dispose()

    def logs(self) -> str:
        return "\n".join(
            f"===== {p.name}\n" + "\n".join(p.read_text(errors="replace").splitlines()[-40:])
            for p in sorted(self.base.glob("*.log"))
        )


@pytest.fixture
def world() -> Iterator[CronWorld]:
    base = Path(tempfile.mkdtemp(prefix="roost-cron-"))
    base.chmod(0o755)
    try:
        with postgres_server() as url:
            w = CronWorld(base, url)
            try:
                w.prepare()
                yield w
            finally:
                w.stop()
                print(w.logs())
                left = processes_under(w.data)
                assert not left, f"left behind: {[p.cmdline() for p in left]}"
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_every_slot_runs_exactly_once_while_lease_holders_die(world: CronWorld) -> None:
    seed = int(os.environ.get("ROOST_CRON_SEED", random.randrange(1 << 30)))
    print(f"ROOST_CRON_SEED={seed}")
    rng = random.Random(seed)
    for name in (*CONTROLLERS, "runner"):
        world.start(name)
    for name in CONTROLLERS:
        wait_until(lambda n=name: world.up(n), 60, f"the API of {name}")  # type: ignore[misc]
    # The whole chain works before anyone dies: a slot has run.
    wait_until(lambda: world.slots_file(), 60, "a first cron run")
    first = int(time.time() // SLOT_S) + 1
    last = first + SLOTS - 1
    kills = 0
    while kills < MIN_KILLS or time.time() < last * SLOT_S:
        boundary = (int(time.time() // SLOT_S) + 1 + rng.randint(0, 1)) * SLOT_S
        # Before the claim, between claim and RunStart, or while the job runs.
        at = boundary + rng.uniform(-0.25, 0.75) * SLOT_S
        assert at < (first + 3 * SLOTS) * SLOT_S, f"only {kills} kills in {3 * SLOTS} slots"
        time.sleep(max(0.0, at - time.time()))
        victim = world.holder()
        if victim is None:
            continue  # a handover is under way: let it finish
        world.procs[victim].kill()
        world.procs[victim].wait()
        kills += 1
        world.start(victim)
        # Two controllers again before the next kill, so a holder can always follow.
        wait_until(lambda v=victim: world.up(v), 60, f"{victim} back")  # type: ignore[misc]
    last = int(time.time() // SLOT_S)
    print(f"{kills} lease holders killed over slots {first}..{last}")

    def settled() -> bool:
        claims = world.claims()
        return all(claims.get(s, ("",))[0] == "finished" for s in range(first, last + 1))

    wait_until(settled, 60, "every slot's claim to finish")
    counts = Counter(s for s in world.slots_file() if first <= s <= last)
    wrong = {s: counts[s] for s in range(first, last + 1) if counts[s] != 1}
    assert not wrong, f"slot -> runs (seed {seed}): {wrong}"
    claims = world.claims()
    failed = {s: claims[s] for s in range(first, last + 1) if claims[s][1] != "succeeded"}
    assert not failed, f"seed {seed}: {failed}"
    printed = Counter(int(line.split()[1]) // 60 for line in world.ran_lines())
    assert all(printed[s] == 1 for s in range(first, last + 1)), (seed, printed)
    logs = {p.stem: p.read_text(errors="replace") for p in world.base.glob("*.log")}
    ctl = logs["controller"] + logs["controller2"]
    print(
        f"claims taken over before they started: {ctl.count('cron: taking over slot')}; "
        f"runs followed by a successor: {ctl.count('cron: following')}; "
        f"RunStarts the runner refused: {logs['runner'].count('refused run')}"
    )
