"""Stateful failover: how long an app cannot write when its database's primary host dies.

Issue 16's speed figures, on network-namespace hosts with real etcd,
Patroni, PostgreSQL and the runner's HAProxy data proxy
(tests/cluster/pgpair.py):

- `standby_write_ratio`: the pair's write capacity with its synchronous
  standby over that of the same primary committing alone (target >= 0.8).
  pgbench drives it from the runner's namespace through the proxy's address
  the app uses, each client inserting one row a transaction (prepared, as
  psycopg does after five), at each of SWEEP client counts; a mode's
  capacity is its best count's rate (the rates summed over the turns). The
  windows are TURNS turns of the same primary, paired / alone / stopped and
  back (ABC CBA ...: a drift of the shared machine's load falls on each mode
  alike), the client counts up and down the same way:
  paired: synchronous_mode on, commits wait for the standby's write;
  alone: synchronous_mode off through Patroni's REST API
  (synchronous_standby_names empty), the standby streaming asynchronously;
  stopped: the standby's member stopped, no walsender.
  Why capacity: the issue asks for the "write throughput" of a
  standby-backed database against a standalone one, and a database's
  throughput is the rate of writes it sustains, not what a fixed number of
  clients each waiting for its last commit get out of it. A synchronous
  standby lengthens each commit (the standby's write and answer, four more
  process wake-ups): at a fixed concurrency that lowers the rate while the
  server still has room for more, and more clients get it back (one
  interleaved sweep: paired 8.0k / 10.1k / 12.7k tps at 16 / 32 / 64
  clients, alone 9.9k / 11.5k / 12.4k). An app whose connections are all
  busy waiting sees the latency-bound reading at 16 clients (CLIENTS:
  gunicorn workers x instances of a few apps' web processes on the pair's
  one PostgreSQL); it is printed beside it as `standby_write_ratio_16c`,
  and both over the stopped windows as `standby_write_ratio_stopped` and
  `standby_write_ratio_16c_stopped`.
  On this one machine both members share its two cores and its disk: with
  the standby stopped, "stopped" gains the standby's WAL receive, replay
  and fsyncs, a share a standalone server on a host of its own never has,
  and is charged to the paired windows only; with it streaming
  asynchronously every window runs the same processes and the one
  difference is the wait for the standby, what synchronous replication
  costs. The walsender's CPU stays in "alone": the figure is not flattered
  by it (a standalone server would be a little faster still). The stopped
  figures are the strict bound on this machine.
- `pg_unavailable_s`: the longest time without an acknowledged write, from
  the primary servicehost's power cut (network dropped, every process
  SIGKILLed) until the app writes again through the same address (target
  <= 15 s), with WRITERS app connections (`AppWriter`, one row a
  transaction, each remembering the ids PostgreSQL acknowledged);
- `pg_lost_writes`: those acknowledged ids missing afterwards (target 0).

Redis is a part of its own (bench/stateful_failover_redis.py):
`redis_unavailable_s`, the master's host killed until a write through the
proxy is accepted again (target <= 10 s), and `redis_lost_acked`, writes the
replica had acknowledged (WAIT 1) missing on the new master (target 0).
Each part takes (base directory, quick) and returns the figures it prints.
The median of the runs is printed, one `name value` line each (and what
`standby_write_ratio` was measured with on the line after it); each window
is a `#` line with the CPU seconds the pair's processes and pgbench used in
it, of the machine's, and how busy the machine was (other work on it takes
its share too). `--quick`: one run with fewer, shorter
windows. Needs root.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg

from roost import patroni

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from stateful_failover_redis import redis_failover  # noqa: E402
from tests.cluster.cluster import wait_for  # noqa: E402
from tests.cluster.harness import Host, Network, skip_reason  # noqa: E402
from tests.cluster.pgpair import (  # noqa: E402
    APP,
    APP_PASSWORD,
    PROXY_PORT,
    AppWriter,
    PairKit,
    start_member,
)

WRITERS = 4
CLIENTS = 16
# Client counts of the capacity sweep (CLIENTS among them, the latency-bound
# figure's): by 64 both modes are near this machine's two cores' capacity
# (the docstring's sweep).
SWEEP = (16, 32, 64)
TURNS = {False: 4, True: 2}  # by --quick
WINDOW_S = {False: 4, True: 3}
# A restarted standby's first seconds (cold caches, catching up) are a
# transient, as a promoted one's were (a window on them gave 2.12 where
# the runs about it gave 0.28-0.97): pgbench writes this long unmeasured
# after each start of the standby.
WARM_S = 2
# Writes before the fault, so that the failover is of a pair under load.
SETTLE_S = 2.0
PAIRED, ALONE, STOPPED = "paired", "alone", "stopped"
SCRIPT = "INSERT INTO bench_rows DEFAULT VALUES;\n"
Part = Callable[[Path, bool], dict[str, float]]


def say(msg: str) -> None:
    print(f"# {msg}", flush=True)


def schedule(turns: int) -> list[str]:
    """The windows' modes, ABC CBA ABC ...: each mode as often first as
    last, so a drift in the machine's load over the run falls on each alike."""
    order = [PAIRED, ALONE, STOPPED]
    return [m for t in range(turns) for m in (order if t % 2 == 0 else order[::-1])]


Rates = dict[str, dict[int, list[float]]]  # mode -> clients -> tps of each window


def at(tps: Rates, mode: str, clients: int) -> float:
    """A mode's rate at one client count, summed over the turns."""
    return sum(tps[mode][clients])


def capacity(tps: Rates, mode: str) -> tuple[float, int]:
    """A mode's best rate over the sweep (summed over the turns) and its client count."""
    return max((at(tps, mode, c), c) for c in tps[mode])


def ratio(tps: Rates, over: str, clients: int | None = None) -> float:
    """Paired over `over`: capacities, or the rates at `clients`."""
    if clients is None:
        num, den = capacity(tps, PAIRED)[0], capacity(tps, over)[0]
    else:
        num, den = at(tps, PAIRED, clients), at(tps, over, clients)
    return num / den if den else 0.0


def measured_with(quick: bool) -> str:
    return (
        f"pgbench through the proxy, one INSERT a transaction, {'/'.join(map(str, SWEEP))} "
        f"clients; capacity: each mode's best count; {TURNS[quick]} turns of "
        f"{WINDOW_S[quick]} s windows on one primary; alone: synchronous_mode off, the standby "
        "streaming asynchronously; stopped: the standby's member stopped"
    )


class CpuUse:
    """CPU seconds over a window: the machine's (every core) and the pair's
    own (every process in its hosts' namespaces, with the children they
    reaped, such as PostgreSQL's backends that ended in it; and pgbench,
    this process's child). Other helpers' work on the machine takes the rest."""

    def __init__(self, kit: PairKit) -> None:
        self.pids = [p for h in kit.hosts for p in kit.net.pids(h)]
        self.start = self._read()

    def _read(self) -> tuple[float, float, float]:
        hz = os.sysconf("SC_CLK_TCK")
        ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
        busy = sum(ticks) - ticks[3] - ticks[4]  # not idle nor iowait
        pair = 0
        for pid in self.pids:
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
            except OSError:
                continue  # gone: its time is in its parent's reaped children's
            fields = stat[stat.rindex(")") + 2 :].split()
            pair += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
        child = resource.getrusage(resource.RUSAGE_CHILDREN)
        return busy / hz, (pair / hz) + child.ru_utime + child.ru_stime, sum(ticks) / hz

    def since(self, kit: PairKit) -> str:
        # pgbench's backends exit after it has: their time is counted once
        # the postmaster has reaped them (up to a second's wait).
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            if not {p for h in kit.hosts for p in kit.net.pids(h)} - set(self.pids):
                break
            time.sleep(0.05)
        end = self._read()
        busy, pair, total = (e - s for e, s in zip(end, self.start, strict=True))
        return f"the pair {pair:.1f} of {total:.1f} cpu-s, machine busy {busy / total:.2f}"


# ------------------------------------------------------------ the pair's modes


class Modes:
    """Puts the pair into a mode; `primary` stays the primary throughout."""

    def __init__(self, kit: PairKit, primary: Host) -> None:
        self.kit = kit
        self.primary = primary
        self.standby = kit.other(primary)
        self.url = (
            f"postgresql://postgres:{kit.plan.superuser_password}"
            f"@{primary.ip}:{kit.plan.pg_port}/postgres"
        )
        self.mode = PAIRED

    def sql(self, query: str) -> object:
        with psycopg.connect(self.url, connect_timeout=5, autocommit=True) as c:
            row = c.execute(query).fetchone()
        return row[0] if row else None

    def enter(self, mode: str, warm: Callable[[], None]) -> None:
        if mode == self.mode:
            return
        if self.mode == STOPPED:
            start_member(self.kit, self.standby)
            wait_for(self._caught_up, 120, "the standby streaming again")
            warm()
        if mode == PAIRED:
            self._synchronous_mode(True)
            wait_for(lambda: self.kit.synchronous() and self._names() != "", 60, "paired")
        else:
            self._synchronous_mode(False)
            wait_for(lambda: not self.kit.synchronous() and self._names() == "", 60, "alone")
        if mode == STOPPED:
            self._stop_standby()
            wait_for(lambda: self.sql("SELECT count(*) FROM pg_stat_replication") == 0, 60, "gone")
        self.mode = mode

    def _names(self) -> object:
        return self.sql("SHOW synchronous_standby_names")

    def _caught_up(self) -> bool:
        # Within 64 kB of the primary's WAL: nothing is written between windows.
        lag = self.sql(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), write_lsn) FROM pg_stat_replication"
            " WHERE state = 'streaming'"
        )
        return lag is not None and float(str(lag)) < 65536

    def _synchronous_mode(self, on: bool) -> None:
        """PATCH Patroni's dynamic configuration (kept in etcd) through the primary's REST API."""
        url = f"http://{self.primary.ip}:{self.kit.plan.rest_port}/config"
        auth = (patroni.REST_USER, self.kit.plan.rest_password)
        httpx.patch(url, json={"synchronous_mode": on}, auth=auth, timeout=5).raise_for_status()

    def _stop_standby(self) -> None:
        """SIGTERM the standby's member (Patroni stops its PostgreSQL) and wait for it."""
        host = self.standby
        for p in host.procs:
            if "roost.servicehost.pgpair" in " ".join(map(str, p.args)) and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(90)
        host.procs = [p for p in host.procs if p.poll() is None]


def pgbench(kit: PairKit, script: Path, seconds: int, clients: int = CLIENTS) -> float:
    """Transactions a second of `clients` over `seconds`, from the runner's
    namespace through the proxy."""
    argv = [
        *("env", f"PGPASSWORD={APP_PASSWORD}", "pgbench", "-n", "-M", "prepared"),
        *("-h", kit.runner.ip, "-p", str(PROXY_PORT), "-U", APP, "-f", str(script)),
        *("-c", str(clients), "-j", "2", "-T", str(seconds), APP),
    ]
    r = kit.net.run_in(kit.runner, argv, timeout=seconds + 60)
    m = re.search(r"^tps = ([\d.]+) \(without", r.stdout, re.M)
    if r.returncode != 0 or m is None:
        raise RuntimeError(f"pgbench failed ({r.returncode}): {r.stdout[-500:]} {r.stderr[-500:]}")
    return float(m.group(1))


def throughput(kit: PairKit, primary: Host, quick: bool) -> Rates:
    """Each mode's pgbench rates at each client count over the schedule's
    windows, on `primary`."""
    script = kit.base / "insert.sql"
    script.write_text(SCRIPT)
    with psycopg.connect(kit.app_url(), autocommit=True, connect_timeout=5) as c:
        c.execute(
            "CREATE TABLE bench_rows (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())"
        )
    modes = Modes(kit, primary)
    tps: Rates = {m: {c: [] for c in SWEEP} for m in (PAIRED, ALONE, STOPPED)}
    pgbench(kit, script, WARM_S)
    for n, mode in enumerate(schedule(TURNS[quick])):
        modes.enter(mode, lambda: pgbench(kit, script, WARM_S))
        for clients in SWEEP if n % 2 == 0 else SWEEP[::-1]:
            cpu = CpuUse(kit)
            rate = pgbench(kit, script, WINDOW_S[quick], clients)
            tps[mode][clients].append(rate)
            used, load = cpu.since(kit), Path("/proc/loadavg").read_text().split()[0]
            say(f"{mode} {clients} clients: {rate:.0f} tps ({used}, load {load})")
    for mode in tps:
        best, clients = capacity(tps, mode)
        say(f"{mode}: capacity {best / TURNS[quick]:.0f} tps at {clients} clients")
    modes.enter(PAIRED, lambda: pgbench(kit, script, WARM_S))
    if kit.primary() is not primary:
        raise RuntimeError("the primary changed during the throughput windows")
    return tps


# ------------------------------------------------------------ the failover


def _writers(kit: PairKit) -> tuple[list[AppWriter], list[threading.Thread]]:
    writers = [AppWriter(kit.app_url(), start_id=1 + n * 1_000_000_000) for n in range(WRITERS)]
    threads = [threading.Thread(target=w.run) for w in writers]
    for t in threads:
        t.start()
    return writers, threads


def pg_failover(base: Path, quick: bool) -> dict[str, float]:
    net = Network(base)
    try:
        net.create()
        kit = PairKit(net)
        kit.start()
        primary = wait_for(kit.primary, 30, "Patroni to name the primary")
        standby = kit.other(primary)
        tps = throughput(kit, primary, quick)
        writers, threads = _writers(kit)
        try:
            wait_for(lambda: all(w.acked for w in writers), 60, "every writer writing")
            time.sleep(SETTLE_S)
            wait_for(kit.synchronous, 60, "the standby to be synchronous before the fault")
            killed_at = time.monotonic()
            net.partition(primary)
            net.kill_host(primary)
            wait_for(lambda: kit.primary([standby]), 120, "the standby to take over")
            promoted = time.monotonic()
            wait_for(lambda: all(w.first_ack_after(promoted) for w in writers), 120, "writes")
        finally:
            for w in writers:
                w.stop()
            for t in threads:
                t.join(30)
        acked = set().union(*(w.acked_ids() for w in writers))
        return {
            "pg_unavailable_s": max(w.longest_gap(killed_at) for w in writers),
            "pg_lost_writes": float(len(acked - kit.ids())),
            "standby_write_ratio": ratio(tps, ALONE),
            "standby_write_ratio_16c": ratio(tps, ALONE, CLIENTS),
            "standby_write_ratio_stopped": ratio(tps, STOPPED),
            "standby_write_ratio_16c_stopped": ratio(tps, STOPPED, CLIENTS),
        }
    finally:
        net.close()


PARTS: list[Part] = [pg_failover, redis_failover]


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="one run, fewer and shorter windows")
    args = ap.parse_args()
    # A SIGTERM (`timeout`, a CI job cancelled) unwinds like an error, so
    # each part's `finally` tears its namespace hosts down: killed outright,
    # the bench left them running (Redis, sentinels, HAProxy, the bridge).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    reason = skip_reason()
    if reason:
        raise SystemExit(f"stateful_failover: {reason}")
    runs = 1 if args.quick else 3
    figures: dict[str, list[float]] = {}
    for part in PARTS:
        for _ in range(runs):
            with tempfile.TemporaryDirectory(prefix="roost-bench-sf-") as tmp:
                for name, value in part(Path(tmp), args.quick).items():
                    figures.setdefault(name, []).append(value)
    for name, values in figures.items():
        shown = ", ".join(f"{v:.2f}" for v in values)
        print(f"{name} {statistics.median(values):.2f}  (runs: {shown})")
        if name == "standby_write_ratio":
            print(f"standby_write_ratio measured with: {measured_with(args.quick)}")


if __name__ == "__main__":
    main()
