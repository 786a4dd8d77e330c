"""roost.tenant's decisions, without a process: uids, the bwrap command line,
cgroup files for v1 and v2 (this machine has only v1 mounted; v2's files are
checked here, as data)."""

from __future__ import annotations

from pathlib import Path

import pytest

from roost.tenant.cgroups import (
    Limits,
    limit_files,
    own_cgroup_paths,
    parse_oom_kills,
)
from roost.tenant.identity import (
    APP_UID_BASE,
    BUILD_UID_BASE,
    TENANT_UID_MAX,
    IdentityError,
    identity_for,
    is_tenant_uid,
    user_name,
)
from roost.tenant.sandbox import SandboxError, SandboxSpec, bwrap_argv

LINKS: dict[str, str | None] = {"/bin": "usr/bin", "/lib": "usr/lib", "/lib64": None}


def test_uids_follow_the_app_id_in_two_ranges() -> None:
    app = identity_for(42, "shop")
    build = identity_for(42, "shop", "build")
    assert (app.uid, app.gid, app.name) == (APP_UID_BASE + 42, APP_UID_BASE + 42, "a42-shop")
    assert (build.uid, build.name) == (BUILD_UID_BASE + 42, "b42-shop")
    assert identity_for(42, "shop") == app  # the same on every host
    assert identity_for(43, "shop").uid != app.uid  # a reused name is another user
    assert all(is_tenant_uid(u) for u in (app.uid, build.uid, TENANT_UID_MAX))
    assert not any(is_tenant_uid(u) for u in (0, 1000, 65534, APP_UID_BASE - 1))
    assert TENANT_UID_MAX < 2**31  # tools that read uids as signed


def test_bad_ids_and_names() -> None:
    for bad in (0, -1, 100_000_000):
        with pytest.raises(IdentityError):
            identity_for(bad, "x")
    assert user_name(7, "A.b/c") == "a7-abc"
    assert len(user_name(99_999_999, "x" * 64)) <= 32


def test_bwrap_command_line_binds_only_what_it_is_given() -> None:
    spec = SandboxSpec(
        cwd=Path("/data/runner/images/abc/app"),
        hostname="shop",
        readonly=(Path("/data/runner/images/abc"), Path("/data/runner/apps/shop")),
        writable=(Path("/data/runner/apps/shop/data"),),
        tmp_bytes=1 << 20,
    )
    argv = bwrap_argv(
        spec, identity_for(42, "shop"), ["python", "-m", "gunicorn"], host_links=LINKS
    )
    text = " ".join(argv)
    for flag in ("--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent"):
        assert flag in argv
    assert "--unshare-net" not in argv  # instances serve on host ports
    assert "--ro-bind /usr /usr" in text and "--ro-bind /etc /etc" in text
    assert "--symlink usr/bin /bin" in text and "--ro-bind /lib64 /lib64" in text
    assert "--size 1048576 --perms 1777 --tmpfs /tmp" in text
    # The image and home read-only, the data directory writable, bound after
    # (over) the home that holds it; nothing else of /data.
    ro_home = argv.index("/data/runner/apps/shop")
    rw_data = argv.index("/data/runner/apps/shop/data")
    assert argv[ro_home - 1] == "--ro-bind" and argv[rw_data - 1] == "--bind"
    assert ro_home < rw_data
    assert "--bind /data /data" not in text and "/data/runner/keys" not in text
    # The way there is made 0711: walked, never listed.
    assert "--perms 0711 --dir /data --perms 0711 --dir /data/runner" in text
    # Then the drop: the app's uid, no groups, no new privileges, default signals.
    tail = argv[argv.index("/usr/bin/setpriv") :]
    assert tail[:7] == [
        "/usr/bin/setpriv", "--reuid=1900000042", "--regid=1900000042", "--clear-groups",
        "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all",
    ]  # fmt: skip
    assert tail[-5:] == ["--default-signal", "--", "python", "-m", "gunicorn"]


def test_bwrap_refuses_what_it_cannot_bind_safely() -> None:
    ident = identity_for(1, "x")
    with pytest.raises(SandboxError):
        bwrap_argv(SandboxSpec(cwd=Path("rel")), ident, ["true"])
    with pytest.raises(SandboxError):
        bwrap_argv(SandboxSpec(cwd=Path("/a"), writable=(Path("/a/../etc"),)), ident, ["true"])
    with pytest.raises(SandboxError):  # a writable bind inside /usr or /etc
        bwrap_argv(SandboxSpec(cwd=Path("/"), writable=(Path("/etc/cron.d"),)), ident, ["true"])
    with pytest.raises(SandboxError):
        bwrap_argv(SandboxSpec(cwd=Path("/")), ident, [])


def test_cgroup_files_v2_and_v1() -> None:
    limits = Limits(memory_mb=256, pids=512, cpu_weight=100)
    assert limit_files(2, limits) == [
        ("", "memory.max", str(256 << 20)),
        ("", "memory.swap.max", "0"),
        ("", "cpu.weight", "100"),
        ("", "pids.max", "512"),
    ]
    assert limit_files(1, limits) == [
        ("memory", "memory.limit_in_bytes", str(256 << 20)),
        ("memory", "memory.memsw.limit_in_bytes", str(256 << 20)),
        ("cpu", "cpu.shares", "1024"),
        ("pids", "pids.max", "512"),
    ]
    # No memory or pids limit: only the CPU weight; weights are clamped.
    assert limit_files(2, Limits(cpu_weight=0)) == [("", "cpu.weight", "1")]
    assert limit_files(1, Limits(cpu_weight=50_000)) == [("cpu", "cpu.shares", "102400")]


def test_cgroup_text_parsing() -> None:
    assert parse_oom_kills(2, "low 0\nhigh 0\nmax 3\noom 2\noom_kill 2\n") == 2
    assert parse_oom_kills(1, "oom_kill_disable 0\nunder_oom 0\noom_kill 1\n") == 1
    assert parse_oom_kills(1, "oom_kill_disable 0\n") == 0
    v1 = "9:name=systemd:/\n8:pids:/\n4:memory:/a/b\n2:cpu,cpuacct:/c\n0::/\n"
    paths = own_cgroup_paths(v1)
    assert paths["memory"] == "/a/b" and paths["cpu"] == "/c" and paths["cpuacct"] == "/c"
    assert own_cgroup_paths("0::/user.slice/x\n") == {"": "/user.slice/x"}


def test_hidden_tools_are_bound_over_the_system_directories() -> None:
    spec = SandboxSpec(
        cwd=Path("/"),
        hidden_files=(Path("/usr/bin/x86_64-linux-gnu-gcc-12"),),
        hidden_dirs=(Path("/usr/lib/gcc"),),
    )
    argv = bwrap_argv(spec, identity_for(1, "x"), ["true"], host_links=LINKS)
    text = " ".join(argv)
    assert "--ro-bind /dev/null /usr/bin/x86_64-linux-gnu-gcc-12" in text
    assert "--tmpfs /usr/lib/gcc --remount-ro /usr/lib/gcc" in text
    # After (over) /usr, not under it.
    assert text.index("--ro-bind /usr /usr") < text.index("/dev/null /usr/bin")
    for outside in (Path("/data/gcc"), Path("/usr"), Path("/usr/../etc/x")):
        with pytest.raises(SandboxError):
            bwrap_argv(
                SandboxSpec(cwd=Path("/"), hidden_files=(outside,)), identity_for(1, "x"), ["true"]
            )


def test_a_mount_shows_a_directory_at_another_path_read_only() -> None:
    layer = Path("/data/runner/cache/layers/ab12")
    prefix = Path("/root/.pyenv/versions/3.12.1")
    spec = SandboxSpec(
        cwd=Path("/"), readonly=(Path("/data/runner/images/abc"),), mounts=((layer, prefix),)
    )
    argv = bwrap_argv(spec, identity_for(42, "shop"), ["python"], host_links=LINKS)
    text = " ".join(argv)
    assert f"--ro-bind {layer} {prefix}" in text
    # The way to where it shows is made (0711); the source's own path is not.
    assert "--perms 0711 --dir /root --perms 0711 --dir /root/.pyenv" in text
    assert f"--dir {layer}" not in text and f"--ro-bind {layer} {layer}" not in text
    ident = identity_for(1, "x")
    for bad in (
        (layer, Path("/usr/local/python")),
        (Path("rel"), prefix),
        (layer, Path("/a/../b")),
    ):
        with pytest.raises(SandboxError):
            bwrap_argv(SandboxSpec(cwd=Path("/"), mounts=(bad,)), ident, ["true"])
