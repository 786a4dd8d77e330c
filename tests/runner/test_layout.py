"""On-disk layout: host id, socket paths, the data link, ports."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from roost.runner.layout import MAX_SOCKET_PATH, Layout, PortAllocator, link_data, safe_name


def test_host_id_is_generated_once_and_kept(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    first = layout.host_id()
    assert first and (tmp_path / "runner" / "host_id").read_text().strip() == first
    assert Layout(tmp_path).host_id() == first
    assert Layout(tmp_path).host_id("override-1") == "override-1"
    assert Layout(tmp_path / "other").host_id() != first


def test_socket_paths_fit_sun_path(tmp_path: Path) -> None:
    # A short base of its own: tmp_path's length varies (pytest-xdist adds
    # a directory per worker) and could itself overflow sun_path.
    base = Path(tempfile.mkdtemp(prefix="rl-", dir="/tmp"))
    try:
        short = Layout(base / "d")
        # A directory per instance: a sandboxed instance may write there alone.
        assert short.socket_path("web-1") == str(
            base / "d" / "runner" / "sockets" / "web-1" / "web.sock"
        )
    finally:
        shutil.rmtree(base)
    deep = Layout(tmp_path / ("x" * 120))
    path = deep.socket_path("web-1")
    assert len(path) <= MAX_SOCKET_PATH
    assert path == deep.socket_path("web-1") != deep.socket_path("web-2")
    assert Path(path).parent.parent.is_dir()
    deep.release_socket(path)
    deep.release_socket(deep.socket_path("web-2"))
    assert not Path(path).parent.parent.exists()


def test_the_short_socket_directory_goes_with_its_last_instance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A deep DATA's sockets live in a directory of the temporary one, which
    # outlived every such runner (dozens a day in /tmp from the test platforms).
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "t"))
    (tmp_path / "t").mkdir()
    deep = Layout(tmp_path / ("x" * 120))
    one, two = deep.socket_path("web-1"), deep.socket_path("web-2")
    for p in (one, two):
        Path(p).parent.mkdir()  # as the runner makes it (confine.prepare_dirs)
        Path(p).write_bytes(b"")
    short = Path(one).parent.parent
    assert short.parent == tmp_path / "t" and (short.stat().st_mode & 0o777) == 0o700
    deep.release_socket(one)
    assert not Path(one).parent.exists() and Path(two).exists()  # web-2's stays
    deep.release_socket(two)
    assert list((tmp_path / "t").iterdir()) == []
    # Under DATA (short enough) only the instance's own directory goes.
    base = Path(tempfile.mkdtemp(prefix="rl-", dir="/tmp"))  # tmp_path may be too deep
    try:
        near = Layout(base / "d")
        sock = near.socket_path("web-1")
        Path(sock).parent.mkdir(parents=True)
        near.release_socket(sock)
        assert not Path(sock).parent.exists() and Path(sock).parent.parent.is_dir()
    finally:
        shutil.rmtree(base)


def test_unsafe_names_are_hashed() -> None:
    assert safe_name("web-1.a_b") == "web-1.a_b"
    for bad in ("../etc", "a/b", "..", "", "x" * 65):
        name = safe_name(bad)
        assert "/" not in name and name not in (".", "..") and len(name) == 24


def test_data_link_is_idempotent_and_refuses_a_real_data_dir(tmp_path: Path) -> None:
    image = tmp_path / "image"
    (image / "app").mkdir(parents=True)
    data = tmp_path / "apps" / "demo" / "data"
    link_data(image, data)
    link_data(image, data)
    assert data.is_dir() and os.readlink(image / "data") == str(data)
    (image / "app" / ".." / "data" / "f").write_text("x")
    assert (data / "f").read_text() == "x"
    other = tmp_path / "image2"
    (other / "data").mkdir(parents=True)
    with pytest.raises(RuntimeError, match="has its own 'data'"):
        link_data(other, data)


def test_ports_are_never_handed_out_twice() -> None:
    ports = PortAllocator()
    got = {ports.allocate() for _ in range(20)}
    assert len(got) == 20 and got == ports.in_use
    some = next(iter(got))
    ports.release(some)
    assert some not in ports.in_use


def test_the_runner_directory_is_roots_alone(tmp_path: Path) -> None:
    older = tmp_path / "runner"
    older.mkdir(mode=0o755)  # as an older version left it
    os.chmod(older, 0o755)
    Layout(tmp_path).create()
    assert (older.stat().st_mode & 0o777) == 0o700
