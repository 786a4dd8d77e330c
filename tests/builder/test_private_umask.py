"""The builder under the daemons' private umask (077, `roost.daemonize`).

Its own files are private, but what it makes for others keeps the modes they
need: the build user reads the checkout and the lock, and every file of an
image is readable (every directory enterable) by whoever runs it, which is
each app's own user. The upload here has no entries for its directories, as
`roost deploy` packs it, so tar makes them under the umask.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from roost.builder.pipeline import Build
from roost.builder.workspace import Workspace
from roost.cli.archive import pack
from roost.images.cache import ImageCache
from roost.images.fetch import store_fetcher
from roost.settings import Settings

from .conftest import EXAMPLES

# Builds run as this app's own build user (b<id>-<app>), as the daemon's do.
APP_ID = 11


def not_for_others(root: Path) -> list[str]:
    """Entries of the image at `root` another user could not read (a directory:
    enter and list), through the symlinks to its shared layers (images.cache)."""
    bad = []
    tops = [root, *(p.resolve() for p in root.iterdir() if p.is_symlink() and p.is_dir())]
    assert len(tops) > 1, "the image has no layer to look into"
    for dirpath, dirnames, filenames in (w for top in tops for w in os.walk(top)):
        for name in [*dirnames, *filenames]:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                continue
            need = 0o005 if stat.S_ISDIR(st.st_mode) else 0o004
            if st.st_mode & need != need:
                bad.append(f"{oct(stat.S_IMODE(st.st_mode))} {os.path.relpath(path, root)}")
    return bad


async def test_an_image_built_under_the_private_umask_is_readable_by_its_app(
    builder_root: Path, tmp_path: Path
) -> None:
    app = tmp_path / "app"
    (app / "pkg" / "sub").mkdir(parents=True)
    for f in (EXAMPLES / "hello").iterdir():
        (app / f.name).write_bytes(f.read_bytes())
    (app / "pkg" / "sub" / "data.txt").write_text("read at run time\n")
    for f in [*app.iterdir(), app / "pkg" / "sub" / "data.txt"]:
        os.chmod(f, 0o644 if f.is_file() else 0o755)  # as a checkout has them, whatever our umask
    archive = pack(app)
    old = os.umask(0o077)
    try:
        ws = await Workspace.open(builder_root, Settings(build_timeout_s=240))
        lines: list[str] = []
        out = await Build(ws, "umask-1", "hello", archive, lines.append, app_id=APP_ID).run()
        root = await ImageCache(tmp_path / "cache", 1 << 34).ensure(
            out.image_digest, store_fetcher(ws.store)
        )
    finally:
        os.umask(old)
    assert (root / "app" / "pkg" / "sub" / "data.txt").is_file()
    assert not not_for_others(root), not_for_others(root)[:20]
