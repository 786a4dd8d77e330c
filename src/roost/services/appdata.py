"""The canonical copy of each app's persistent data directory.

  DATA/servicehost/appdata/<app>/         the files (rsync/scp/sftp read and write here)
  DATA/servicehost/appdata/.versions.json  app -> version (changes after each write)

Runners copy it (`DataPull`); a version tells them whether their copy is
current. A version is a millisecond timestamp that never goes backwards for
an app, so it stays distinct across servicehost restarts. The archive carries
regular files and directories only: symlinks stay here (rsync stores them
munged, so they point nowhere), and nothing else (devices, fifos) is ever
copied out.
"""

from __future__ import annotations

import io
import json
import os
import stat
import tarfile
import time
from pathlib import Path

from roost.services.names import check_app


class AppData:
    def __init__(self, root: Path, owner: tuple[int, int] | None = None) -> None:
        """`owner`: (uid, gid) the transfer tools run as, who owns the files."""
        self.root = root
        self.owner = owner
        self._versions_file = root / ".versions.json"
        self._versions: dict[str, int] = {}

    def create(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        # Searchable, not listable: the tools' user reaches its apps' dirs.
        os.chmod(self.root, 0o711)
        try:
            self._versions = {
                k: int(v) for k, v in json.loads(self._versions_file.read_text()).items()
            }
        except (FileNotFoundError, ValueError):
            self._versions = {}

    def dir(self, app: str) -> Path:
        """The app's directory (created on first use)."""
        d = self.root / check_app(app)
        if not d.is_dir():
            d.mkdir(mode=0o755)
            if self.owner is not None:
                os.chown(d, *self.owner)
        return d

    def version(self, app: str) -> int:
        check_app(app)
        return self._versions.get(app, 0)

    def bump(self, app: str) -> int:
        """Record that `app`'s data may have changed; its new version."""
        check_app(app)
        new = max(int(time.time() * 1000), self._versions.get(app, 0) + 1)
        self._versions[app] = new
        tmp = self._versions_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self._versions, sort_keys=True))
        os.replace(tmp, self._versions_file)
        return new

    def archive(self, app: str) -> bytes:
        """tar.gz of the app's directory: regular files and directories only."""
        return pack_tree(self.dir(app))


def pack_tree(root: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames.sort()
            base = Path(dirpath)
            for name in [*sorted(dirnames), *sorted(filenames)]:
                path = base / name
                st = os.lstat(path)
                if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
                    continue
                info = tar.gettarinfo(str(path), arcname=str(path.relative_to(root)))
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mode &= 0o777
                if info.isreg():
                    with open(path, "rb") as fh:
                        tar.addfile(info, fh)
                else:
                    tar.addfile(info)
    return buf.getvalue()
