"""Pure parts of the gateway and its helpers on runners and servicehosts:
command parsing, the key cache, the servicehost's second line of checks,
the push hook's branch choice, data-directory pulls, run commands."""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import tempfile
import time
from pathlib import Path

import pytest

from roost.appspec.model import AppSpec, DjangoSpec, ProcessSpec
from roost.gateway.commands import (
    CommandError,
    DataCommand,
    GitCommand,
    RunCommand,
    parse,
    split_app_path,
)
from roost.gateway.hook import pick
from roost.gateway.identity import KNOWN_TTL_S, Identity, IdentityCache
from roost.runner.datasync import apply_archive
from roost.runner.runcmd import render_run
from roost.servicehost.appdata import pack_tree
from roost.servicehost.datasession import Refused, build_argv, rsync_options, safe_relative
from roost.wire.messages import DataStart, InstanceAssignment

# ------------------------------------------------------------ commands


@pytest.mark.parametrize(
    ("line", "app"),
    [
        ("git-receive-pack 'hello'", "hello"),
        ("git-receive-pack '/hello'", "hello"),
        ("git-receive-pack '/hello.git'", "hello"),
        ("git receive-pack 'my-app_2'", "my-app_2"),
    ],
)
def test_git_push_paths(line: str, app: str) -> None:
    assert parse(line) == GitCommand(service="receive-pack", app=app)


def test_git_clone_and_bad_repos() -> None:
    assert parse("git-upload-pack 'a'") == GitCommand(service="upload-pack", app="a")
    for bad in ("git-receive-pack '../x'", "git-receive-pack 'a/b'", "git-archive 'a'"):
        with pytest.raises(CommandError):
            parse(bad)


def test_run_keeps_the_command_line_for_the_shell() -> None:
    cmd = parse("run hello python -c 'import sys; print(1)' > /dev/null")
    assert cmd == RunCommand(app="hello", command="python -c 'import sys; print(1)' > /dev/null")
    assert parse("epio_command hello ls") == RunCommand(app="hello", command="ls")
    assert parse("run hello") == RunCommand(app="hello", command="")
    assert parse("django hello migrate --noinput") == RunCommand(
        app="hello", command="migrate --noinput", kind="django"
    )
    for bad in ("run", "django hello", "run Hello!x", "frobnicate x"):
        with pytest.raises(CommandError):
            parse(bad)


def test_rsync_server_lines() -> None:
    cmd = parse("rsync --server -vlogDtpre.iLsfxCIvu --delete . hello/dir/")
    assert cmd == DataCommand(
        app="hello", tool="rsync", options=["-vlogDtpre.iLsfxCIvu", "--delete"], paths=["dir/"]
    )
    assert cmd.writes
    down = parse("rsync --server --sender -vlogDtpre.iLsfxCIvu . hello/a hello/with\\ space")
    assert isinstance(down, DataCommand) and not down.writes
    assert down.paths == ["a", "with space"]
    for bad in (
        "rsync --server -av . hello/../x",
        "rsync --server -av . hello/a other/b",
        "rsync --server -av . .",
        "rsync -av . hello/x",
        "rsync --server -av hello/x",
    ):
        with pytest.raises(CommandError):
            parse(bad)


def test_scp_server_lines() -> None:
    assert parse("scp -t hello/x") == DataCommand(
        app="hello", tool="scp", options=["-t"], paths=["x"]
    )
    # Legacy scp sends a path with a space unquoted.
    assert parse("scp -r -p -f hello/y z").paths == ["y z"]  # type: ignore[union-attr]
    for bad in ("scp hello/x", "scp -t -f hello/x", "scp -S evil -t hello/x", "scp -t x/../../y"):
        with pytest.raises(CommandError):
            parse(bad)


def test_split_app_path() -> None:
    assert split_app_path("/hello/a/") == ("hello", "a/")
    assert split_app_path("hello") == ("hello", "")
    with pytest.raises(CommandError):
        split_app_path("hello/a/../../b")
    with pytest.raises(CommandError):
        split_app_path("../etc/passwd")


# ------------------------------------------------------------ identity cache


async def test_identity_cache_remembers_known_keys_briefly() -> None:
    now = [100.0]
    asked: list[str] = []
    known = {"SHA256:k": Identity(1, "a@example.com", "SHA256:k")}

    async def lookup(fp: str) -> Identity | None:
        asked.append(fp)
        return known.get(fp)

    cache = IdentityCache(lookup, clock=lambda: now[0])
    assert (await cache.identify("SHA256:k")) == known["SHA256:k"]
    assert (await cache.identify("SHA256:k")) == known["SHA256:k"]
    assert asked == ["SHA256:k"]
    known.clear()  # the key is removed
    now[0] += KNOWN_TTL_S + 0.1
    assert await cache.identify("SHA256:k") is None
    now[0] += 1.0  # unknown keys are asked about again soon: a key just added works
    known["SHA256:k"] = Identity(1, "a@example.com", "SHA256:k")
    assert await cache.identify("SHA256:k") is not None
    assert asked == ["SHA256:k"] * 3


# ------------------------------------------------------------ servicehost checks


def test_safe_relative() -> None:
    assert safe_relative("") == "."
    assert safe_relative("a/b/") == "./a/b/"
    assert safe_relative("-x") == "./-x"  # never read as an option
    for bad in ("/etc", "a/../../b", "..", "a\x00b"):
        with pytest.raises(Refused):
            safe_relative(bad)


def test_rsync_options_refuse_paths_and_privilege() -> None:
    assert rsync_options(["-vlogDtpre.iLsfxCIvu", "--delete", "--partial-dir=.p"]) == [
        "-vlogDtpre.iLsfxCIvu",
        "--delete",
        "--partial-dir=./.p",
    ]
    for bad in (
        ["--temp-dir=/tmp"],
        ["--log-file=x"],
        ["--link-dest=../other"],
        ["--backup-dir=../../x"],
        ["--chmod=/x"],
        ["--super"],
        ["-av", "-r"],
        ["--server"],
        ["-a;rm"],
    ):
        with pytest.raises(Refused):
            rsync_options(bad)


def test_build_argv(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "link").symlink_to("/etc")
    up = DataStart(session="s", app="a", tool="rsync", options=["-av"], paths=["sub/"])
    assert build_argv(up, tmp_path) == (
        ["rsync", "--server", "-av", "--munge-links", ".", "./sub/"],
        True,
    )
    down = DataStart(session="s", app="a", tool="scp", options=["-f"], paths=["sub"])
    assert build_argv(down, tmp_path) == (["scp", "-f", "./sub"], False)
    sftp = DataStart(session="s", app="", tool="sftp", apps=["a", "b"])
    argv, writes = build_argv(sftp, tmp_path, (1000, 1000))
    assert writes
    assert argv[1:] == ["-m", "roost.servicehost.sftpd", str(tmp_path), "1000", "1000", "a", "b"]
    with pytest.raises(Exception, match="not valid"):
        build_argv(DataStart(session="s", app="", tool="sftp", apps=["../x"]), tmp_path)
    for bad in (
        DataStart(session="s", app="a", tool="scp", options=["-t"], paths=["link/passwd"]),
        DataStart(session="s", app="a", tool="scp", options=["-t", "-f"], paths=["x"]),
        DataStart(session="s", app="a", tool="rsync", options=["-av"], paths=["x", "y"]),
        DataStart(session="s", app="a", tool="rsync", options=["-av"], paths=["../x"]),
    ):
        with pytest.raises(Refused):
            build_argv(bad, tmp_path)


# ------------------------------------------------------------ push hook


def test_hook_deploys_main_then_master_never_a_deletion() -> None:
    z = "0" * 40
    assert pick([("a", "b" * 40, "refs/heads/master"), ("c", "d" * 40, "refs/heads/main")]) == (
        "refs/heads/main",
        "d" * 40,
    )
    assert pick([("a", "b" * 40, "refs/heads/master")]) == ("refs/heads/master", "b" * 40)
    assert pick([("a", z, "refs/heads/main")]) is None
    assert pick([("a", "b" * 40, "refs/heads/feature")]) is None


# ------------------------------------------------------------ data directory pulls


def _pack(files: dict[str, bytes], tmp: Path) -> bytes:
    root = tmp / f"canon-{len(os.listdir(tmp))}"
    root.mkdir()
    for name, data in files.items():
        p = root / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return pack_tree(root)


def test_pulls_replace_delete_and_keep_the_apps_own_files(tmp_path: Path) -> None:
    dest, manifest = tmp_path / "data", tmp_path / "manifest.json"
    apply_archive(dest, manifest, _pack({"a.txt": b"1", "d/b.txt": b"2"}, tmp_path))
    assert (dest / "a.txt").read_bytes() == b"1" and (dest / "d" / "b.txt").read_bytes() == b"2"
    (dest / "local.db").write_bytes(b"app's own")  # written by the app on this host
    apply_archive(dest, manifest, _pack({"a.txt": b"changed"}, tmp_path))
    assert (dest / "a.txt").read_bytes() == b"changed"
    assert not (dest / "d").exists()  # deleted on the canonical copy
    assert (dest / "local.db").read_bytes() == b"app's own"
    assert json.loads(manifest.read_text()) == ["a.txt"]


def test_pulls_never_write_through_symlinks(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest, manifest = tmp_path / "data", tmp_path / "manifest.json"
    apply_archive(dest, manifest, _pack({"d/x.txt": b"1"}, tmp_path))
    # The app swaps the directory for a symlink pointing elsewhere.
    (dest / "d" / "x.txt").unlink()
    (dest / "d").rmdir()
    (dest / "d").symlink_to(outside)
    (outside / "x.txt").write_bytes(b"not yours")
    apply_archive(dest, manifest, _pack({"d/y.txt": b"2"}, tmp_path))
    assert (outside / "x.txt").read_bytes() == b"not yours"
    assert not (outside / "y.txt").exists()
    assert (dest / "d").is_dir() and not (dest / "d").is_symlink()


def test_pack_tree_leaves_symlinks_out(tmp_path: Path) -> None:
    root = tmp_path / "r"
    root.mkdir()
    (root / "f").write_text("x")
    (root / "l").symlink_to("/etc/passwd")
    with tarfile.open(fileobj=io.BytesIO(pack_tree(root)), mode="r:gz") as tar:
        assert tar.getnames() == ["f"]


def test_pack_tree_packs_one_tree_to_the_same_bytes_at_any_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two hosts' views of one tree are compared by their packs (a restore
    # drill, tests/datadir); gzip's header once held the second it was made.
    root = tmp_path / "r"
    (root / "d").mkdir(parents=True)
    (root / "d" / "f").write_text("x")
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.0)
    first = pack_tree(root)
    monkeypatch.setattr(time, "time", lambda: 1_700_000_001.0)
    assert pack_tree(root) == first


# ------------------------------------------------------------ run commands


def _assignment(**spec: object) -> InstanceAssignment:
    return InstanceAssignment(
        instance_id="hello-run-1",
        app="hello",
        release=3,
        image_digest="sha256:x",
        process_type="run",
        spec=AppSpec(
            processes={"web": ProcessSpec(name="web", kind="wsgi", entrypoint="app:app", web=True)},
            **spec,  # type: ignore[arg-type]
        ),
        env={"DATABASE_URL": "postgres://u:p@h:1/d", "SECRET": "s"},
    )


def test_render_run_is_the_instances_environment(tmp_path: Path) -> None:
    launch = render_run(
        _assignment(),
        command="python manage.py shell",
        kind="shell",
        image_root=tmp_path,
        data_directory=tmp_path / "data",
        bundle_config_dir=tmp_path / "bundle",
        term="xterm",
    )
    assert launch.argv == ["/bin/sh", "-c", "exec python manage.py shell"]
    assert launch.cwd == tmp_path / "app"
    assert launch.env["VIRTUAL_ENV"] == str(tmp_path / "venv")
    assert launch.env["SECRET"] == "s" and launch.env["TERM"] == "xterm"
    assert launch.env["PYTHONPATH"].split(":")[0] == str(tmp_path / "bundle")
    assert "postgres" in launch.bundle_config
    shell = render_run(
        _assignment(),
        command="a; b",
        kind="shell",
        image_root=tmp_path,
        data_directory=tmp_path / "data",
        bundle_config_dir=tmp_path / "bundle",
        shell="/bin/bash",
    )
    assert shell.argv == ["/bin/bash", "-c", "a; b"] and "TERM" not in shell.env


def test_render_django(tmp_path: Path) -> None:
    a = _assignment(django=DjangoSpec(base="site", settings_module="site.settings"))
    managed = render_run(
        a,
        command="migrate",
        kind="django",
        image_root=tmp_path,
        data_directory=tmp_path / "data",
        bundle_config_dir=tmp_path / "b",
        has_manage_py=True,
    )
    assert managed.argv[-1] == "exec python manage.py migrate"
    assert managed.cwd == tmp_path / "app" / "site"
    assert managed.env["DJANGO_SETTINGS_MODULE"] == "site.settings"
    plain = render_run(
        a,
        command="migrate",
        kind="django",
        image_root=tmp_path,
        data_directory=tmp_path / "data",
        bundle_config_dir=tmp_path / "b",
    )
    assert plain.argv[-1] == "exec django-admin migrate"


def test_a_pull_is_applied_as_the_app_so_a_raced_symlink_gets_it_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The app's processes run while its data is pulled; it may swap a
    directory the runner just checked for a symlink (the race, won here on
    purpose). Applied as the app's own uid, the write through that link to a
    root-owned place fails instead of landing there; its own files are its."""
    from roost.runner import datasync
    from roost.tenant.identity import ensure_identity, identity_for

    app = ensure_identity(identity_for(97, "racer"))
    # World-searchable (pytest's tmp dirs are root's alone): the app's uid
    # walks down to its data directory, as through its sandbox's binds.
    base = Path(tempfile.mkdtemp(prefix="roost-pull-"))
    os.chmod(base, 0o755)
    home = base / "home"
    home.mkdir(mode=0o755)
    dest, manifest = home / "data", home / "manifest.json"
    outside = base / "etc-cron.d"  # root's, 0755: where a root write would be a takeover
    outside.mkdir(mode=0o755)
    real_dir = datasync._real_dir

    def raced(root: Path, rel: str) -> Path:
        path = real_dir(root, rel)
        if rel == "d":  # checked; now the app swaps it for a link
            shutil.rmtree(path)
            path.symlink_to(outside)
        return path

    monkeypatch.setattr(datasync, "_real_dir", raced)
    with pytest.raises(OSError, match="as a97-racer failed"):
        apply_archive(dest, manifest, _pack({"d/evil": b"* * * * * root sh"}, tmp_path), app)
    assert list(outside.iterdir()) == []
    monkeypatch.setattr(datasync, "_real_dir", real_dir)
    apply_archive(dest, manifest, _pack({"ok.txt": b"1"}, tmp_path), app)
    assert (dest / "ok.txt").stat().st_uid == app.uid and dest.stat().st_uid == app.uid
    shutil.rmtree(base)
