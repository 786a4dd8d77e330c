from __future__ import annotations

from collections.abc import Iterator

import psutil
import pytest

from roost.runner.shimstart import SERVER


@pytest.fixture(autouse=True)
def _no_leftover_children() -> Iterator[None]:
    """Every runner test must reap (or have killed) every process it started.
    The shims' fork server is this process's for its life, as a runner's is
    (runner/shimstart.py); the shims it forked are still its children here."""
    yield
    left = [
        p
        for p in psutil.Process().children(recursive=True)
        if p.status() != psutil.STATUS_ZOMBIE and p.pid != SERVER.pid
    ]
    assert not left, f"processes left behind: {left}"
