"""Scale run of the failover benchmark: one controller, many simulated runners.

A real controller process (`roost controller`, SQLite state) is seeded with
N apps (two web instances each, already placed over the simulated hosts);
a second process simulates the runners: each has its own ZeroMQ client (CURVE,
with its own runner key), heartbeats every second with the instances its accepted
assignment holds (all "up"), and adopts the assignments the controller sends.
Once every host is up and the controller has settled, we measure over a
window:

  heartbeat_cpu_share  CPU seconds the controller process used per wall
                       second (fraction of one core): heartbeat handling plus
                       the reconcile loop with nothing to change
  heartbeats_per_s     heartbeats answered a second meanwhile: one a runner
                       when the simulator keeps up (on a busy machine it may
                       not, and the share is then measured at that rate)
  reconcile_ms         the controller's own mean reconcile duration over the
                       window (its roost_reconcile_seconds metric)
  heartbeat_p99_ms     round trip of a simulated runner's heartbeat (sent to
                       answered), 99th percentile and worst, from 5 s after
                       the controller first answered one (the first wave waits
                       for every runner's CURVE handshake; printed apart) to
                       the end of the run: the first full pass, steady state,
                       a host going silent and its work moved

and then the time the controller takes to move one silent host's instances.
Over the same span as the round trips, both processes' loop probes
(bench/loopprobe.py) say what held their loops: every hold of 50 ms or more
and every GC pause of 20 ms or more, the worst by the CPU they used. On a
machine busy with other work the round trips grow with its load; the CPU
of the holds says whether the controller's loop (or the simulator's) was
the one that held them.

`db_latency_ms` slows every statement the controller sends to its SQLite
state database (a hook on the DBAPI connection, so the reconcile's raw
snapshot cursor waits too): a stand-in for a slow or distant PostgreSQL.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import loopprobe
import msgspec
import psutil
from sqlalchemy import insert

from roost.appspec import load_app
from roost.controller.secretbox import FERNET_FILE, ensure_key_file
from roost.state import tables as t
from roost.state.db import make_engine, migrate, sqlite_url
from roost.wire.bootstrap import open_node
from roost.wire.cluster import ClusterConfig, Endpoint
from roost.wire.identity import identity, save_peers
from roost.wire.keys import generate_keypair, load_keypair, write_keypair
from roost.wire.messages import Assignment, Heartbeat, HeartbeatReply, InstanceStatus
from roost.wire.rpc import RpcClient

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ScaleResult:
    runners: int
    instances: int
    cpu_share: float
    reconcile_ms: float
    move_s: float
    beat_p99_ms: float
    beat_max_ms: float
    beats_missed: int  # heartbeats that got no answer within the runner's 2 s
    beats_per_s: float  # heartbeats answered per second in the steady window


def slow_statements(latency_s: float) -> None:
    """Every statement on every SQLite connection opened from now on waits
    `latency_s` before it runs (as if the database were that far away)."""
    import functools
    import sqlite3
    import sqlite3.dbapi2

    class SlowCursor(sqlite3.Cursor):
        def execute(self, *args: Any, **kwargs: Any) -> Any:
            time.sleep(latency_s)
            return super().execute(*args, **kwargs)

        def executemany(self, *args: Any, **kwargs: Any) -> Any:
            time.sleep(latency_s)
            return super().executemany(*args, **kwargs)

    class SlowConnection(sqlite3.Connection):
        def cursor(self, factory: Any = SlowCursor) -> Any:
            return super().cursor(factory)

    # SQLAlchemy's pysqlite dialect connects through sqlite3.dbapi2.
    sqlite3.dbapi2.connect = functools.partial(sqlite3.dbapi2.connect, factory=SlowConnection)  # type: ignore[assignment]


def host_name(i: int) -> str:
    return f"sim-{i:04d}"


def seed(data: Path, runners: int, instances: int) -> str:
    """A state database with instances/2 apps of two placed web instances each."""
    url = sqlite_url(data / "state.db")
    migrate(url)
    spec = load_app(REPO / "examples" / "hello")
    spec_json = msgspec.json.encode(spec).decode()
    apps = instances // 2
    now = time.time()
    engine = make_engine(url)
    with engine.begin() as c:
        c.execute(insert(t.accounts).values(id=1, email="bench@localhost", created_at=now))
        c.execute(
            insert(t.apps),
            [
                {"id": i + 1, "name": f"app{i:05d}", "owner_id": 1, "created_at": now,
                 "suspended": False, "current_release": 1}
                for i in range(apps)
            ],
        )  # fmt: skip
        c.execute(
            insert(t.releases),
            [
                {"app_id": i + 1, "version": 1, "build_id": None, "status": "active",
                 "image_digest": f"sha256:{i:064x}", "static_digest": "", "spec_json": spec_json,
                 "lock": "", "description": "seed", "created_at": now, "config_json": "{}",
                 "static_json": "[]"}
                for i in range(apps)
            ],
        )  # fmt: skip
        c.execute(
            insert(t.formation),
            [{"app_id": i + 1, "process_type": "web", "quantity": 2} for i in range(apps)],
        )
        rows = []
        for i in range(apps):
            first = (2 * i) % runners
            for idx, host in ((1, first), (2, (first + 1) % runners)):
                rows.append(
                    {"instance_id": f"app{i:05d}-web-{idx}-v1-seed{i:05x}", "app_id": i + 1,
                     "release": 1, "process_type": "web", "idx": idx,
                     "host_id": host_name(host), "created_at": now}
                )  # fmt: skip
        c.execute(insert(t.placements), rows)
    engine.dispose()
    return url


def prepare(base: Path, runners: int) -> tuple[Path, int]:
    data = base / "controller"
    keys = data / "keys"
    pair = generate_keypair()
    write_keypair(keys, "cluster", pair)
    # Every simulated runner has its own key: a runner may heartbeat only as
    # the host its key belongs to.
    peers = {pair.public: identity("controller", "127.0.0.1")}
    for i in range(runners):
        sim = generate_keypair()
        write_keypair(keys, host_name(i), sim)
        peers[sim.public] = identity("runner", host_name(i))
    save_peers(keys, peers)
    ensure_key_file(keys / FERNET_FILE)
    api_port = _free_port()
    cluster = ClusterConfig(
        name="scale",
        endpoints={
            "controller": [Endpoint(f"tcp://127.0.0.1:{_free_port()}", pair.public_text)],
            "controller-pub": [Endpoint(f"tcp://127.0.0.1:{_free_port()}", pair.public_text)],
        },
    )
    cluster.save(data / "cluster.json")
    return data, api_port


# ---------------------------------------------------------------- the simulated runners


async def simulate(data: Path, runners: int, status_file: Path, stop_file: Path) -> None:
    node, cluster = open_node(data, "cluster")
    held: dict[str, Assignment] = {}
    silenced: set[str] = set()
    # (wall time sent, round trip in ms or -1 for no answer), appended to
    # status_file's .beats sibling every half second.
    beats: list[tuple[float, float]] = []
    beats_file = status_file.with_suffix(".beats")
    async with node:
        keys = [load_keypair(data / "keys", host_name(i)) for i in range(runners)]
        clients = [RpcClient(node, cluster.of("controller"), keypair=k) for k in keys]

        def statuses(asg: Assignment | None) -> list[InstanceStatus]:
            return [
                InstanceStatus(
                    instance_id=a.instance_id,
                    app=a.app,
                    release=a.release,
                    process_type=a.process_type,
                    state="up",
                    pid=0,
                    port=20000 + (hash(a.instance_id) % 20000),
                )
                for a in (asg.instances if asg else [])
            ]

        async def runner(i: int) -> None:
            host = host_name(i)
            client = clients[i]
            # What it reports changes only with what it holds: built once
            # per assignment, so that the simulator (one process for all the
            # runners) spends its time sending, and the round trips it
            # measures are the controller's, not its own queue's.
            built: tuple[Assignment | None, list[InstanceStatus]] = (None, [])
            await asyncio.sleep(random.uniform(0, 1.0))  # spread the beats over the second
            while True:
                began = time.monotonic()
                if host not in silenced:
                    asg = held.get(host)
                    if built[0] is not asg:
                        built = (asg, statuses(asg))
                    hb = Heartbeat(
                        host_id=host,
                        hostname=host,
                        addresses=["127.0.0.1"],
                        memory_mb=65536,
                        cpus=8,
                        instances=built[1],
                        fence=asg.fence if asg else 0,
                        version=asg.version if asg else 0,
                        sent_at=time.time(),
                    )
                    sent, sent_at = time.monotonic(), time.time()
                    for reply in await client.call_all(hb, timeout=2.0):
                        answered = isinstance(reply, HeartbeatReply)
                        beats.append(
                            (sent_at, 1000 * (time.monotonic() - sent) if answered else -1.0)
                        )
                        if isinstance(reply, HeartbeatReply) and reply.assignment is not None:
                            new = reply.assignment
                            if asg is None or (new.fence, new.version) > (asg.fence, asg.version):
                                held[host] = new
                await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - began)))

        async def report() -> None:
            while True:
                await asyncio.sleep(0.5)
                # The simulator holds every runner's assignment (50,000
                # instances): a full collection of that heap held its loop,
                # and every runner's round trip, for ~0.5 s several times a
                # run (loopprobe). What lived half a second is left alone.
                gc.freeze()
                counts = {h: len(a.instances) for h, a in held.items()}
                tmp = status_file.with_suffix(".tmp")
                tmp.write_text(json.dumps({"held": counts}))
                os.replace(tmp, status_file)
                done, beats[:] = list(beats), []
                with beats_file.open("a") as fh:
                    fh.writelines(f"{at:.3f} {ms:.1f}\n" for at, ms in done)
                if stop_file.exists():
                    silenced.update(json.loads(stop_file.read_text()))

        tasks = [asyncio.create_task(runner(i)) for i in range(runners)]
        tasks.append(asyncio.create_task(report()))
        try:
            await asyncio.gather(*tasks)
        finally:
            for c in clients:
                await c.close()


# ---------------------------------------------------------------- the measurement


def _metric(text: str, name: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def _passes(before: str, after: str, kind: str) -> tuple[int, float]:
    """Reconcile passes of `kind` between two scrapes: (count, mean ms)."""
    label = f'{{pass="{kind}"}}'
    n = _metric(after, f"roost_reconcile_seconds_count{label}") - _metric(
        before, f"roost_reconcile_seconds_count{label}"
    )
    s = _metric(after, f"roost_reconcile_seconds_sum{label}") - _metric(
        before, f"roost_reconcile_seconds_sum{label}"
    )
    return int(n), (1000.0 * s / n if n else float("nan"))


# Heartbeats sent this long after the controller first answered one count as
# past its start (the first wave waits for every runner's CURVE handshake).
STARTUP_S = 5.0


def _answered(path: Path, start: float, end: float) -> int:
    """Heartbeats sent from `start` to `end` (wall clock) that got an answer."""
    n = 0
    for line in path.read_text().splitlines() if path.exists() else []:
        at, ms = (float(x) for x in line.split())
        n += start <= at < end and ms >= 0
    return n


def _first_answer(path: Path, since: float) -> float | None:
    """When the first heartbeat sent from `since` on that got an answer was sent."""
    first = None
    for line in path.read_text().splitlines() if path.exists() else []:
        at, ms = (float(x) for x in line.split())
        if at >= since and ms >= 0 and (first is None or at < first):
            first = at
    return first


def _beats(path: Path, since: float, skip: float = 0.0) -> tuple[float, float, int]:
    """(p99 ms, max ms, unanswered) of the heartbeats sent from `skip` seconds
    after the controller first answered one (before, it was not listening)."""
    beats = []
    for line in path.read_text().splitlines() if path.exists() else []:
        at, ms = (float(x) for x in line.split())
        if at >= since:
            beats.append((at, ms))
    first = min((at for at, ms in beats if ms >= 0), default=None)
    if first is None:
        return float("nan"), float("nan"), len(beats)
    times = sorted(ms for at, ms in beats if at >= first + skip and ms >= 0)
    missed = sum(1 for at, ms in beats if at >= first + skip and ms < 0)
    return times[min(len(times) - 1, int(0.99 * len(times)))], times[-1], missed


def run_scale(
    runners: int,
    instances: int,
    window_s: float,
    say: Callable[[str], None] = print,
    db_latency_ms: float = 0.0,
) -> ScaleResult:
    base = Path(tempfile.mkdtemp(prefix="roost-scale-"))
    data, api_port = prepare(base, runners)
    t0 = time.monotonic()
    seed(data, runners, instances)
    took = time.monotonic() - t0
    say(f"scale: seeded {instances // 2} apps, {instances} instances in {took:.1f}s")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOST_")}
    env.update(ROOST_BIND_HOST="127.0.0.1", ROOST_LOG_LEVEL="WARNING", ROOST_API_PORT=str(api_port))
    log = open(base / "controller.log", "wb")  # noqa: SIM115 - closed below
    started = time.time()
    ctl = subprocess.Popen(
        [sys.executable, __file__, "--controller", str(db_latency_ms / 1000),
         "--data", str(data), "controller", "--name", "cluster"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    status, silence = base / "sim.json", base / "silence.json"
    argv = [sys.executable, __file__, "--simulate", str(data), str(runners)]
    sim = subprocess.Popen([*argv, str(status), str(silence)], env=env, start_new_session=True)
    http = httpx.Client(timeout=10)
    try:
        metrics_url = f"http://127.0.0.1:{api_port}/metrics"

        def held() -> dict[str, int]:
            try:
                return dict(json.loads(status.read_text())["held"])
            except (OSError, ValueError, KeyError):
                return {}

        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            h = held()
            if len(h) == runners and sum(h.values()) == instances:
                break
            if ctl.poll() is not None:
                raise RuntimeError(
                    f"the controller exited: {(base / 'controller.log').read_text()[-3000:]}"
                )
            time.sleep(0.5)
        else:
            raise RuntimeError(
                f"simulated runners did not get their assignments: {len(held())} hosts"
            )
        time.sleep(7.0)  # past the new lease holder's grace period: placing is live
        proc, simproc = psutil.Process(ctl.pid), psutil.Process(sim.pid)
        before = http.get(metrics_url).text
        cpu0, wall0, at0 = sum(proc.cpu_times()[:2]), time.monotonic(), time.time()
        sim0 = sum(simproc.cpu_times()[:2])
        time.sleep(window_s)
        cpu1, wall1, at1 = sum(proc.cpu_times()[:2]), time.monotonic(), time.time()
        sim_share = (sum(simproc.cpu_times()[:2]) - sim0) / (wall1 - wall0)
        after = http.get(metrics_url).text
        cpu_share = (cpu1 - cpu0) / (wall1 - wall0)
        idle_n, idle_ms = _passes(before, after, "idle")
        full_n, _ = _passes(before, after, "full")
        say(
            f"scale: steady {wall1 - wall0:.0f}s: controller CPU {cpu1 - cpu0:.2f}s; "
            f"{idle_n} idle re-reads ({idle_ms:.1f} ms each), {full_n} full passes; "
            f"the simulated runners used {sim_share:.2f} of a core (round trips include theirs)"
        )
        # One host goes silent: time until its instances are held elsewhere,
        # and how long the full reconcile passes that move them take.
        victim = host_name(0)
        moved_from = held().get(victim, 0)
        others = sum(v for k, v in held().items() if k != victim)
        before = http.get(metrics_url).text
        silence.write_text(json.dumps([victim]))
        cut = time.monotonic()
        move_s = float("nan")
        while time.monotonic() - cut < 60:
            h = held()
            if sum(v for k, v in h.items() if k != victim) >= others + moved_from:
                move_s = time.monotonic() - cut
                break
            time.sleep(0.1)
        time.sleep(3.0)  # the passes that follow the new instances coming up
        full_n, reconcile_ms = _passes(before, http.get(metrics_url).text, "full")
        say(
            f"scale: {moved_from} instances of a silent host held elsewhere after {move_s:.1f}s; "
            f"{full_n} full passes ({reconcile_ms:.1f} ms each)"
        )
        time.sleep(1.0)  # the simulator's last report of round trips
        beats = status.with_suffix(".beats")
        p99, worst, missed = _beats(beats, started)
        say(
            f"scale: heartbeat round trips since the controller first answered: p99 {p99:.0f} ms, "
            f"worst {worst:.0f} ms, {missed} unanswered"
        )
        p99, worst, missed = _beats(beats, started, STARTUP_S)
        say(
            f"scale: the same from {STARTUP_S:.0f} s on (the first full pass, steady, a host "
            f"lost): p99 {p99:.0f} ms, worst {worst:.0f} ms, {missed} unanswered"
        )
        # What held either side's loop meanwhile (see loopprobe): a stall in
        # the round trips is the controller's only if it shows on its side.
        first = _first_answer(beats, started)
        if first is not None:
            since, until = first + STARTUP_S, time.time()
            for who, probe in (
                ("controller", base / "controller.probe"),
                ("simulator", status.with_suffix(".probe")),
            ):
                seen = loopprobe.summary(loopprobe.read(probe), since, until)
                say(f"scale: {who} from {STARTUP_S:.0f} s on: {seen}")
        # A simulator short of CPU (a busy machine) sends fewer beats than
        # one a runner a second, and the controller's share looks smaller
        # than it is: the rate it was measured at, and the cost of one.
        rate = _answered(beats, at0, at1) / (at1 - at0)
        say(
            f"scale: {rate:.0f} heartbeats answered a second in the steady window, "
            f"{1000 * (cpu1 - cpu0) / max(1.0, rate * (at1 - at0)):.2f} ms of controller CPU each"
        )
        return ScaleResult(
            runners, instances, cpu_share, reconcile_ms, move_s, p99, worst, missed, rate
        )
    finally:
        http.close()
        for p in (sim, ctl):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in (sim, ctl):
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        log.close()
        import shutil

        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__" and len(sys.argv) > 2 and sys.argv[1] == "--controller":
    # The controller, its statements slowed by sys.argv[2] seconds (0: not at all).
    if float(sys.argv[2]) > 0:
        slow_statements(float(sys.argv[2]))
    from loopprobe import probed

    import roost.daemonize
    from roost.cli.main import main

    # Its loop's holds and GC pauses, beside the data directory (see loopprobe).
    run_loop = roost.daemonize.run_loop
    probe_file = Path(sys.argv[sys.argv.index("--data") + 1]).parent / "controller.probe"
    roost.daemonize.run_loop = lambda main: run_loop(probed(main, probe_file))

    sys.argv = ["roost", *sys.argv[3:]]
    main()

if __name__ == "__main__" and len(sys.argv) == 6 and sys.argv[1] == "--simulate":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    from loopprobe import probed

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    status_file = Path(sys.argv[4])
    args = (Path(sys.argv[2]), int(sys.argv[3]), status_file, Path(sys.argv[5]))
    asyncio.run(probed(lambda: simulate(*args), status_file.with_suffix(".probe"))())
