"""A confined process for real: bubblewrap, the app's uid, its cgroup (the v1
hierarchy this machine has; a daemon in a network namespace mounts it itself)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from roost.tenant.cgroups import Limits
from roost.tenant.identity import identity_for
from roost.tenant.launch import Tenancy, TenantSpec
from roost.tenant.sandbox import SandboxSpec, interpreter_prefix
from roost.tenant.toolmask import host_build_tools

PYTHON_PREFIX = interpreter_prefix(Path(sys.prefix))


@pytest.fixture
def tenancy(tmp_path: Path) -> Iterator[Tenancy]:
    t = Tenancy.for_daemon(f"t-{os.getpid()}-{abs(hash(tmp_path)) % 10**8}")
    assert t.enabled, "the suite runs as root: the sandbox must be on"
    yield t
    t.close()
    assert t.hierarchy is not None
    assert not any(b.exists() for b in t.hierarchy.bases.values())


def run(
    t: Tenancy,
    tmp: Path,
    code: str,
    limits: Limits = Limits(),
    unit: str = "u1",
    hidden: tuple[tuple[Path, ...], tuple[Path, ...]] = ((), ()),
) -> tuple[int, str, bool]:
    ident = identity_for(77, "tenanttest")
    data = tmp / "data"
    data.mkdir(exist_ok=True)
    os.chown(data, ident.uid, ident.gid)
    readonly = tuple(p for p in (PYTHON_PREFIX, Path(sys.prefix)) if p is not None)
    box = SandboxSpec(
        cwd=data, readonly=readonly, writable=(data,), hidden_files=hidden[0], hidden_dirs=hidden[1]
    )
    spec = TenantSpec(ident, box, limits, unit)
    p = t.prepare(spec, [sys.executable, "-c", code])
    proc = subprocess.run(
        p.argv, preexec_fn=p.preexec, capture_output=True, text=True, start_new_session=True
    )
    oom = p.oom_killed()
    p.finish()
    return proc.returncode, proc.stdout + proc.stderr, oom


def test_runs_as_the_app_and_sees_nothing_else(tenancy: Tenancy, tmp_path: Path) -> None:
    secret = tmp_path / "platform-secret"
    secret.write_text("key")
    rc, out, _ = run(
        tenancy,
        tmp_path,
        "import os, pathlib\n"
        "print(os.getuid(), os.getgid(), os.getgroups(), oct(os.umask(0)))\n"
        f"print(pathlib.Path({str(secret)!r}).exists(),\n"
        "      sum(e.isdigit() for e in os.listdir('/proc')) < 5)\n"
        "pathlib.Path('mine').write_text('x')\n"
        "print(open('/proc/self/status').read().split('NoNewPrivs:')[1].split()[0])\n",
    )
    assert rc == 0, out
    ids, seen, nnp = out.splitlines()[:3]
    assert ids == "1900000077 1900000077 [] 0o77"
    assert seen == "False True"  # a file beside the data dir: not there; few processes
    assert nnp == "1"
    assert (tmp_path / "data" / "mine").stat().st_uid == 1900000077


def test_memory_and_pids_limits_hold(tenancy: Tenancy, tmp_path: Path) -> None:
    rc, _, oom = run(tenancy, tmp_path, "x = bytearray(300 << 20)", Limits(memory_mb=64))
    assert rc == 128 + 9 and oom
    rc, out, _ = run(
        tenancy,
        tmp_path,
        "import os, time\n"
        "n = 0\n"
        "try:\n"
        "    while True:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(30); os._exit(0)\n"
        "        n += 1\n"
        "except OSError:\n"
        "    print('stopped at', n)\n",
        Limits(pids=20),
        unit="u2",
    )
    assert rc == 0 and "stopped at" in out, out
    assert int(out.split()[-1]) < 20


def test_nothing_outlives_the_command(tenancy: Tenancy, tmp_path: Path) -> None:
    marker = str(7000 + os.getpid() % 1000)
    rc, _, _ = run(
        tenancy,
        tmp_path,
        f"import subprocess; subprocess.Popen(['sleep', '{marker}'], start_new_session=True)",
    )
    assert rc == 0
    left = subprocess.run(["pgrep", "-f", f"^sleep {marker}$"], capture_output=True, text=True)
    assert left.stdout == ""


def test_a_runner_sandbox_has_no_compiler(tenancy: Tenancy, tmp_path: Path) -> None:
    """The host has gcc (the build stack); a sandbox that hides the host's
    build tools has none of it, by any name, nor gcc's own programs."""
    code = (
        "import os, shutil, subprocess\n"
        "print([t for t in ('gcc', 'cc', 'c++', 'cpp', 'as', 'ld') if shutil.which(t)])\n"
        "print(os.listdir('/usr/lib/gcc'))\n"
        "try:\n"
        "    print(subprocess.run(['gcc', '--version']).returncode)\n"
        "except OSError as exc:\n"
        "    print(type(exc).__name__)\n"
    )
    rc, out, _ = run(tenancy, tmp_path, code)
    assert rc == 0 and out.splitlines()[0] == "['gcc', 'cc', 'c++', 'cpp', 'as', 'ld']", out
    rc, out, _ = run(tenancy, tmp_path, code, hidden=host_build_tools())
    assert rc == 0, out
    assert out.splitlines() == ["[]", "[]", "PermissionError"]


def test_the_start_up_sweep_spares_the_cgroups_it_is_told_to_keep(tenancy: Tenancy) -> None:
    """A runner adopting instances names their cgroups: its sweep kills the rest."""
    assert tenancy.hierarchy is not None
    kept, left = tenancy.hierarchy.cgroup("kept"), tenancy.hierarchy.cgroup("left")
    procs = []
    for cg in (kept, left):
        cg.create(Limits())
        procs.append(subprocess.Popen(["sleep", "300"], preexec_fn=cg.attach_self))
    try:
        Tenancy.for_daemon(tenancy.owner, keep={"kept"})  # a successor starting
        assert procs[1].wait(10) == -9
        assert not any(d.exists() for d in left.dirs.values())
        assert procs[0].poll() is None and kept.pids() == {procs[0].pid}
    finally:
        for p in procs:
            p.kill()
            p.wait()
