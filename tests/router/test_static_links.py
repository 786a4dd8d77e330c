"""Symlinks, hard links and special files in a static bundle never reach past it.

A bundle is made by a build, and builds run untrusted code: these attack the
router's real request path (and its real bundle fetch) with bundles holding
links out of them, and check that nothing but the bundle's own regular files
is ever served.
"""

from __future__ import annotations

import asyncio
import errno
import io
import os
import platform
import tarfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from roost.router import safeopen
from roost.router.safeopen import open_beneath, openat2_available, path_parts
from roost.wire.messages import AppRoute, StaticRoute
from tests.router.conftest import RawClient, backend_of

SECRET = b"TOP-SECRET-OUTSIDE-THE-BUNDLE\n" * 20
CSS = b"body { color: #333; }\n" * 200
DIGEST = "sha256:" + "cd" * 32


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    d = tmp_path / "outside"
    d.mkdir()
    (d / "secret.txt").write_bytes(SECRET)
    return d


@pytest.fixture
def hostile(tmp_path: Path, outside: Path) -> Path:
    """A bundle (as an older builder let it through) full of ways out."""
    root = tmp_path / "bundle"
    s = root / "app/static"
    for d in ("css", "docs", "list"):
        (s / d).mkdir(parents=True)
    (s / "css/site.css").write_bytes(CSS)
    (s / "css/page.css").write_bytes(CSS)
    (s / "list/a.txt").write_bytes(b"a")
    os.symlink("/", s / "root")  # a link to / : any file the router can read
    os.symlink("/etc/passwd", s / "passwd.css")  # a file outside, absolute
    os.symlink(outside / "secret.txt", s / "secret.css")
    os.symlink("../../../outside/secret.txt", s / "rel.css")  # relative, climbing out
    os.symlink(outside, s / "css/up")  # a nested directory link
    os.symlink("css/site.css", s / "alias.css")  # even a link that stays inside
    os.symlink(outside / "secret.txt", s / "css/page.css.gz")  # a planted gzip sibling
    os.symlink(outside / "secret.txt", s / "docs/index.html")  # a planted index
    os.link(outside / "secret.txt", s / "hard.txt")  # a hard link to a file outside
    os.mkfifo(s / "pipe.css")
    os.symlink("/", s / "list/root")
    os.symlink(outside / "secret.txt", s / "list/sec.txt")
    os.symlink(outside, root / "app/linked")  # the route's own directory is a link
    os.symlink(outside / "secret.txt", root / "app/robots.txt")  # a file route's file
    return root


def hostile_app(backend: Any, digest: str = DIGEST) -> AppRoute:
    return AppRoute(
        app="s",
        hostnames=["s.localhost"],
        backends=[backend_of(backend)],
        static=[
            StaticRoute(url_prefix="/static/", path="app/static"),
            StaticRoute(url_prefix="/listed/", path="app/static/list", directory_indexes=True),
            StaticRoute(url_prefix="/linked/", path="app/linked"),
            StaticRoute(url_prefix="/robots.txt", path="app/robots.txt", is_file=True),
        ],
        static_bundle=digest,
    )


ATTACKS = [
    "/static/root/etc/passwd",
    "/static/root/etc/hostname",
    "/static/passwd.css",
    "/static/secret.css",
    "/static/rel.css",
    "/static/css/up/secret.txt",
    "/static/alias.css",
    "/static/docs/",
    "/static/hard.txt",
    "/static/pipe.css",
    "/listed/root/etc/passwd",
    "/listed/sec.txt",
    "/linked/secret.txt",
    "/robots.txt",
]


@pytest.fixture(params=["openat2", "component-walk"])
def open_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways the router opens files: openat2, and the O_NOFOLLOW walk it
    falls back to on kernels without openat2."""
    if request.param == "component-walk":
        monkeypatch.setattr(safeopen._openat2, "_usable", False)
    return str(request.param)


async def wait_for_bundle(r: Any) -> None:
    for _ in range(200):
        if r.ctx.bundles:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("bundle never became ready")


async def assert_refused(port: int, target: str) -> None:
    raw = await RawClient.open(port)  # sent as is: no client-side normalizing
    try:
        await raw.send(
            b"GET %s HTTP/1.1\r\nHost: s.localhost\r\nAccept-Encoding: identity\r\n\r\n"
            % target.encode()
        )
        status, body = (await raw.raw_responses(1))[0]
    finally:
        await raw.close()
    assert status == 404, f"{target}: {status} {body[:80]!r}"
    assert b"TOP-SECRET" not in body and b"root:" not in body, target


async def test_links_out_of_the_bundle_are_404(
    backends: Any, router: Any, hostile: Path, open_mode: str
) -> None:
    one = await backends("one")

    async def ensure(digest: str) -> Path:
        return hostile

    async with router([hostile_app(one)], ensure_bundle=ensure) as r, httpx.AsyncClient() as c:
        await wait_for_bundle(r)
        base, h = f"http://127.0.0.1:{r.port}", {"Host": "s.localhost"}
        for target in ATTACKS:
            await assert_refused(r.port, target)
        # The bundle's own files are still served; a planted .gz sibling is not.
        ok = await c.get(f"{base}/static/css/site.css", headers=h)
        assert ok.status_code == 200 and ok.content == CSS
        page = await c.get(f"{base}/static/css/page.css", headers={**h, "Accept-Encoding": "gzip"})
        assert page.status_code == 200 and page.content == CSS
        assert "content-encoding" not in page.headers
        listing = await c.get(f"{base}/listed/", headers=h)
        assert listing.status_code == 200 and 'href="a.txt"' in listing.text
        assert "root" not in listing.text and "sec.txt" not in listing.text
        assert one.requests == []  # refused here, not handed to the app


def tar_of(members: list[tuple[str, bytes, bytes, str]]) -> bytes:
    """A bundle archive of (name, tar type, data, link target) members."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for name, kind, data, link in members:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.size, info.mode = kind, link, len(data), 0o644
            info.mtime = 1_700_000_000
            if kind == tarfile.CHRTYPE:
                info.devmajor, info.devminor = 1, 3  # /dev/null's numbers
            tf.addfile(info, io.BytesIO(data) if data else None)
    return buf.getvalue()


# What a build could put in its bundle archive before the builder re-packed it
# (the untrusted collect step wrote the archive itself); GNU tar unpacks all of it.
LINKED_BUNDLE = [
    ("app/static/css/site.css", tarfile.REGTYPE, CSS, ""),
    ("app/static/root", tarfile.SYMTYPE, b"", "/"),
    ("app/static/passwd.css", tarfile.SYMTYPE, b"", "/etc/passwd"),
    ("app/static/twin.css", tarfile.LNKTYPE, b"", "app/static/css/site.css"),
    ("app/static/pipe.css", tarfile.FIFOTYPE, b"", ""),
    ("app/static/null.css", tarfile.CHRTYPE, b"", ""),
    ("app/static/dir", tarfile.DIRTYPE, b"", ""),
]


@pytest.fixture
async def bundle_server(tmp_path: Path) -> AsyncIterator[Callable[[bytes], Any]]:
    """A real image store behind a CURVE RpcServer: serve(blob) -> (digest, client)."""
    from roost.images.serve import handle_image_request
    from roost.images.store import ImageStore
    from roost.wire.cluster import Endpoint
    from roost.wire.keys import generate_keypair
    from roost.wire.messages import Error, ImageChunkRequest, Msg
    from roost.wire.node import Node
    from roost.wire.rpc import RpcClient, RpcServer

    store = ImageStore(tmp_path / "store")

    async def serve(msg: Msg) -> Msg:
        if isinstance(msg, ImageChunkRequest):
            return handle_image_request(store, msg)
        return Error(message="unexpected")

    skey, rkey = generate_keypair(), generate_keypair()
    async with Node(skey, [rkey.public]) as snode, Node(rkey, []) as rnode:
        server = RpcServer(snode, "tcp://127.0.0.1:*", serve)
        task = asyncio.create_task(server.serve())
        client = RpcClient(rnode, [Endpoint(server.address, skey.public_text)])

        def put(blob: bytes) -> tuple[str, Any]:
            return store.put_bytes(blob), client

        try:
            yield put
        finally:
            await client.close()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


async def test_unpacked_bundle_holds_only_regular_files_and_directories(
    backends: Any, router: Any, bundle_server: Any, tmp_path: Path
) -> None:
    """The router's real fetch: CURVE chunk requests, verify, unpack. A bundle
    with links in it (one an older builder let through) lands without them."""
    from roost.router.bundles import image_cache_ensure

    digest, client = bundle_server(tar_of(LINKED_BUNDLE))
    ensure, release = image_cache_ensure(tmp_path / "cache", 1 << 30, client)
    one = await backends("one")
    route = msgspec.structs.replace(hostile_app(one), static_bundle=digest)
    async with router([route], ensure_bundle=ensure) as r, httpx.AsyncClient() as c:
        await wait_for_bundle(r)
        unpacked = r.ctx.bundles[digest]
        kinds = {}
        for dirpath, dirnames, filenames in os.walk(unpacked):
            for name in dirnames + filenames:
                p = Path(dirpath, name)
                st = p.lstat()
                kinds[str(p.relative_to(unpacked))] = (
                    "dir" if p.is_dir() and not p.is_symlink() else
                    "file" if p.is_file() and not p.is_symlink() and st.st_nlink == 1 else
                    "other"
                )  # fmt: skip
        assert kinds == {
            "app": "dir",
            "app/static": "dir",
            "app/static/css": "dir",
            "app/static/css/site.css": "file",
            "app/static/dir": "dir",
        }
        ok = await c.get(
            f"http://127.0.0.1:{r.port}/static/css/site.css", headers={"Host": "s.localhost"}
        )
        assert ok.status_code == 200 and ok.content == CSS
        for target in ("/static/root/etc/passwd", "/static/passwd.css", "/static/twin.css"):
            await assert_refused(r.port, target)
    release(digest)


def test_path_parts_refuse_climbing() -> None:
    assert path_parts("app/static//css/./a.css") == ["app", "static", "css", "a.css"]
    assert path_parts("/app/") == ["app"]
    assert path_parts("") == []
    assert path_parts("app/../etc") is None
    assert path_parts("a\0b") is None


@pytest.mark.parametrize("use_openat2", [True, False])
def test_open_beneath_refuses_every_link_and_climb(
    tmp_path: Path, outside: Path, use_openat2: bool
) -> None:
    root = tmp_path / "r"
    (root / "d").mkdir(parents=True)
    (root / "d/f.txt").write_bytes(b"inside")
    os.symlink("/", root / "d/slash")
    os.symlink("f.txt", root / "d/alias")
    os.symlink(outside, root / "out")
    dirfd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        fd = open_beneath(dirfd, ["d", "f.txt"], use_openat2=use_openat2)
        assert os.read(fd, 100) == b"inside"
        os.close(fd)
        fd = open_beneath(dirfd, [], os.O_RDONLY | os.O_DIRECTORY, use_openat2=use_openat2)
        assert sorted(os.listdir(fd)) == ["d", "out"]
        os.close(fd)
        refusals = {
            ("d", "slash", "etc", "passwd"): (errno.ELOOP, errno.ENOTDIR),
            ("d", "alias"): (errno.ELOOP,),
            ("out", "secret.txt"): (errno.ELOOP, errno.ENOTDIR),
            ("out",): (errno.ELOOP,),
            ("..", "outside", "secret.txt"): (errno.EXDEV,),
            ("d/f.txt",): (errno.EXDEV,),
            ("d", "missing"): (errno.ENOENT,),
        }
        for parts, codes in refusals.items():
            with pytest.raises(OSError) as info:
                open_beneath(dirfd, list(parts), use_openat2=use_openat2)
            assert info.value.errno in codes, (parts, info.value)
    finally:
        os.close(dirfd)


def test_openat2_is_used_where_the_kernel_has_it() -> None:
    """openat2 arrived in Linux 5.6: where it exists it is used, not the walk."""
    major, minor = (int(x) for x in platform.release().split(".")[:2])
    assert openat2_available() == ((major, minor) >= (5, 6))


def test_unpack_keeps_files_and_directories_and_names_what_it_skipped(tmp_path: Path) -> None:
    from roost.router.unpack import unpack_bundle

    archive = tmp_path / "bundle.tar"
    archive.write_bytes(
        tar_of(
            [
                *LINKED_BUNDLE,
                # a member under a link skipped above lands inside, as a directory
                ("app/static/root/etc/planted.txt", tarfile.REGTYPE, b"inside", ""),
                ("/abs/a.txt", tarfile.REGTYPE, b"abs", ""),  # a leading / is dropped
                ("app/static/css/site.css", tarfile.REGTYPE, b"again", ""),  # a duplicate
            ]
        )
    )
    dest = tmp_path / "dest"
    dest.mkdir()
    skipped = unpack_bundle(archive, dest)
    assert [s.split(" (")[0] for s in skipped] == [
        "app/static/root",
        "app/static/passwd.css",
        "app/static/twin.css",
        "app/static/pipe.css",
        "app/static/null.css",
        "app/static/css/site.css",
    ]
    assert "symbolic link to /)" in skipped[0] and "hard link" in skipped[2]
    files = sorted(
        str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file() and not p.is_symlink()
    )
    assert files == ["abs/a.txt", "app/static/css/site.css", "app/static/root/etc/planted.txt"]
    assert not any(p.is_symlink() for p in dest.rglob("*"))
    assert (dest / "app/static/css/site.css").read_bytes() == CSS
    assert (dest / "app/static/css/site.css").stat().st_mtime == 1_700_000_000


def test_unpack_refuses_a_bundle_whose_member_climbs_out(tmp_path: Path) -> None:
    from roost.images.digest import ImageError
    from roost.router.unpack import unpack_bundle

    archive = tmp_path / "bundle.tar"
    archive.write_bytes(tar_of([("../../climbed.txt", tarfile.REGTYPE, b"out", "")]))
    dest = tmp_path / "a" / "dest"
    dest.mkdir(parents=True)
    with pytest.raises(ImageError, match="leads outside"):
        unpack_bundle(archive, dest)
    assert not (tmp_path / "climbed.txt").exists() and list(dest.iterdir()) == []
