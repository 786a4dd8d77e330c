from __future__ import annotations

from collections.abc import Iterator

import psutil
import pytest


@pytest.fixture(autouse=True)
def _no_leftover_children() -> Iterator[None]:
    """Every runner test must reap (or have killed) every process it started."""
    yield
    left = [
        p for p in psutil.Process().children(recursive=True) if p.status() != psutil.STATUS_ZOMBIE
    ]
    assert not left, f"processes left behind: {left}"
