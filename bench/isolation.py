"""Isolation benchmark: what the tenant sandbox costs an instance.

Not a test: it prints numbers. The hello example app (Flask on gunicorn, two
workers, as the runner starts it) is run the way the runner runs it, through
`roost.runner.shimclient.Child` (under its shim), once confined (its own uid, bubblewrap, a
cgroup with the default limits: `roost.tenant`) and once as the runner
itself, alternately, in the same invocation:

The confined side also runs behind the tenant firewall (roost.tenant.firewall:
a table of the bench's own, `roost_bench`, the runner's rules with loopback
as the router), so its per-packet cost is counted; the table goes at the end.

  start     spawn -> first 200 answer on its port, polled every 2 ms;
            the median of each mode over interleaved repetitions
  through   wrk -> roost's router -> the instance, one confined and one
            unconfined instance behind two host names of one router (routes
            pushed by a stand-in controller over real CURVE sockets, as in
            bench/router.py), in interleaved rounds; medians of req/s

It prints `start_overhead_ms` (confined median minus unconfined median) and
`sandboxed_throughput_ratio` (confined req/s over unconfined req/s). The
targets of issue 22 are <= 50 ms and >= 0.97. Needs root (the sandbox), wrk
(installed from the OS packages when missing) and uv to build hello's venv
from the package index. Traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import routerkit as rbench

from roost.appspec.model import AppSpec
from roost.runner.layout import PortAllocator
from roost.runner.shimclient import Child, ShimRecord
from roost.tenant.cgroups import Limits
from roost.tenant.firewall import Plan, render
from roost.tenant.identity import identity_for
from roost.tenant.launch import Prepared, Tenancy, TenantSpec
from roost.tenant.nft import Nft, locate
from roost.tenant.sandbox import SandboxSpec, interpreter_prefix
from roost.wire.messages import AppRoute, Backend, InstanceAssignment

REPO = Path(__file__).resolve().parents[1]
HOST = rbench.HOST
FIREWALL_TABLE = "roost_bench"
# Instance ports as the runner hands them out (the range the firewall names).
PORTS = PortAllocator(HOST)


def build_image(work: Path) -> Path:
    """An image root like a runner's: app/ (hello) and venv/ (Flask, gunicorn)."""
    root = work / "image"
    (root / "app").mkdir(parents=True)
    shutil.copy(REPO / "examples" / "hello" / "app.py", root / "app" / "app.py")
    uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    subprocess.run(
        [uv, "venv", "--quiet", "--python", sys.executable, str(root / "venv")], check=True
    )
    subprocess.run(
        [uv, "pip", "install", "--quiet", "--python", str(root / "venv" / "bin" / "python"),
         "flask", "gunicorn"],
        check=True,
    )  # fmt: skip
    for p in [root, *root.rglob("*")]:
        if p.is_dir() and not p.is_symlink():
            p.chmod(0o755)
    return root


def argv(root: Path, port: int) -> list[str]:
    return [
        str(root / "venv" / "bin" / "python"), "-m", "gunicorn",
        "--bind", f"{HOST}:{port}", "--workers", "2", "--access-logfile", "-",
        "--chdir", str(root / "app"), "app:app",
    ]  # fmt: skip


def prepare(tenancy: Tenancy, root: Path, port: int, unit: str, data: Path) -> Prepared:
    if not tenancy.enabled:
        return Prepared(argv=argv(root, port), identity=None, cgroup=None)
    ident = identity_for(4242, "bench-isolation")
    prefix = interpreter_prefix(root / "venv")
    spec = TenantSpec(
        identity=ident,
        sandbox=SandboxSpec(
            cwd=root / "app",
            readonly=(root, *((prefix,) if prefix else ())),
            writable=(data,),
        ),
        limits=Limits(memory_mb=256, pids=512),
        unit=unit,
    )
    prepared = tenancy.prepare(spec, argv(root, port))
    os.chown(data, ident.uid, ident.gid)  # an empty directory: the app's own
    return prepared


class Instance:
    """One gunicorn, started as the runner starts it, pumped and reaped."""

    def __init__(self, child: Child) -> None:
        self.child = child
        self.task = asyncio.create_task(child.run(lambda _stream, _line: None))

    async def stop(self) -> None:
        self.child.signal_group(signal.SIGTERM)
        try:
            await asyncio.wait_for(asyncio.shield(self.task), 10)
        except TimeoutError:
            self.child.signal_group(signal.SIGKILL)
            await self.task


async def start(prepared: Prepared, root: Path, port: int) -> tuple[Instance, float]:
    env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/tmp"}
    began = time.perf_counter()
    unit = f"port-{port}"
    record = ShimRecord(
        assignment=InstanceAssignment(
            instance_id=unit,
            app="bench-isolation",
            release=1,
            image_digest="sha256:" + "0" * 64,
            process_type="web",
            spec=AppSpec(),
        ),
        process_name="web.1",
    )
    shim_dir = root.parent / "shims" / unit
    inst = Instance(await Child.start(shim_dir, record, env, root / "app", prepared))
    async with httpx.AsyncClient() as client:
        while True:
            with contextlib.suppress(httpx.TransportError):
                if (await client.get(f"http://{HOST}:{port}/", timeout=2)).status_code == 200:
                    return inst, time.perf_counter() - began
            if inst.task.done():
                raise RuntimeError(f"the instance exited: {inst.task.result()}")
            await asyncio.sleep(0.002)


async def measure_starts(
    modes: dict[str, Tenancy], root: Path, data: Path, reps: int
) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {m: [] for m in modes}
    for r in range(reps):
        order = list(modes) if r % 2 == 0 else list(modes)[::-1]
        for mode in order:
            port = PORTS.allocate()
            inst, took = await start(
                prepare(modes[mode], root, port, f"start-{r}", data), root, port
            )
            await inst.stop()
            out[mode].append(took)
            print(f"  start {r + 1} {mode:11s} {took * 1000:7.1f} ms", flush=True)
    return out


async def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="fewer, shorter repetitions")
    args = ap.parse_args()
    reps = 6 if args.quick else 16
    rounds, seconds = (3, 2.0) if args.quick else (7, 4.0)
    rbench.ensure_tools()
    confined = Tenancy.for_daemon("bench-isolation")
    if not confined.enabled:
        sys.exit("bench/isolation.py: needs root (bubblewrap and cgroups)")
    modes = {"unconfined": Tenancy("bench-off", enabled=False), "sandboxed": confined}
    work = Path(tempfile.mkdtemp(prefix="roost-bench-iso-"))
    router: subprocess.Popen[bytes] | None = None
    running: list[Instance] = []
    nft = Nft([locate()])
    try:
        await nft.apply(
            render(
                Plan(
                    table=FIREWALL_TABLE,
                    comment="bench/isolation.py",
                    instance_ports=(20000, 29999),
                    routers=("127.0.0.1", "::1"),
                    public_ports=(80, 443),
                )
            )
        )
        root = build_image(work)
        data = work / "data"
        data.mkdir()
        print("instance start, interleaved:", flush=True)
        starts = await measure_starts(modes, root, data, reps)
        ports = {m: PORTS.allocate() for m in modes}
        for mode, port in ports.items():
            inst, _ = await start(prepare(modes[mode], root, port, "through", data), root, port)
            running.append(inst)
        routes = {
            m: AppRoute(
                app=m,
                hostnames=[f"{m}.localhost"],
                backends=[Backend(instance_id=f"{m}-1", host=HOST, port=p)],
            )
            for m, p in ports.items()
        }
        rdata = work / "router"
        rdata.mkdir()
        rps: dict[str, list[float]] = {m: [] for m in modes}
        async with rbench.FakeController(rdata, routes).running():
            rport = rbench.free_port()
            router = rbench.start_router(rdata, rport)
            await rbench.wait_port(rport)
            for m in modes:
                await rbench.wrk(rport, f"{m}.localhost", 1, conns=20)  # warm up
            print("throughput through the router, interleaved:", flush=True)
            for r in range(rounds):
                for m in list(modes) if r % 2 == 0 else list(modes)[::-1]:
                    load = await rbench.wrk(rport, f"{m}.localhost", seconds, conns=20)
                    rps[m].append(load.rps)
                    print(
                        f"  round {r + 1} {m:11s} {load.rps:8.0f} req/s  failed {load.failed}",
                        flush=True,
                    )
    finally:
        if router is not None:
            rbench.stop(router)
        for inst in running:
            await inst.stop()
        confined.close()
        await nft.remove(FIREWALL_TABLE, owner="bench/isolation.py")
        shutil.rmtree(work, ignore_errors=True)
    med = {m: statistics.median(v) for m, v in starts.items()}
    thr = {m: statistics.median(v) for m, v in rps.items()}
    print(f"start_unconfined_ms {med['unconfined'] * 1000:.1f}")
    print(f"start_sandboxed_ms {med['sandboxed'] * 1000:.1f}")
    print(f"start_overhead_ms {(med['sandboxed'] - med['unconfined']) * 1000:.1f}")
    print(f"unconfined_rps {thr['unconfined']:.0f}")
    print(f"sandboxed_rps {thr['sandboxed']:.0f}")
    print(f"sandboxed_throughput_ratio {thr['sandboxed'] / thr['unconfined']:.3f}")


if __name__ == "__main__":
    asyncio.run(main())
