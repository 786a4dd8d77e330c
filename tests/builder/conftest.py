from __future__ import annotations

import io
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from roost.builder.ramlayers import remove_ram_layers
from roost.builder.workspace import Workspace
from roost.settings import Settings

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"


def tar_dir(d: Path, extra: dict[str, str] | None = None) -> bytes:
    """A gzipped tar of directory `d` (plus extra files), as an upload."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for p in sorted(d.rglob("*")):
            if "__pycache__" in p.parts:
                continue
            tf.add(p, str(p.relative_to(d)), recursive=False)
        for name, text in (extra or {}).items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture(scope="session")
def builder_root() -> Iterator[Path]:
    """One builder directory for the session (shared uv cache and layers).

    Made under a world-searchable directory: pytest's own tmp dirs are 0700,
    which the unprivileged build user could not enter.
    """
    base = Path(tempfile.mkdtemp(prefix="roost-builder-test-"))
    os.chmod(base, 0o755)
    yield base / "builder"
    remove_ram_layers(Path(Settings().builder_ram_dir), base / "builder")
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
async def ws(builder_root: Path) -> Workspace:
    return await Workspace.open(builder_root, Settings(build_timeout_s=240))
