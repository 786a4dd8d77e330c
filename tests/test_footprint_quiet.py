"""bench/footprint.py's wait for an idle platform: pure, over pid samples."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType


def _footprint() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "bench" / "footprint.py"
    spec = importlib.util.spec_from_file_location("bench_footprint", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


quiet_since = _footprint().quiet_since
A = frozenset({1, 2})
B = frozenset({1, 2, 3})  # a job (a base backup) joined


def test_not_quiet_before_the_first_sample_is_old_enough() -> None:
    assert not quiet_since([], 10.0, 5.0)
    assert not quiet_since([(8.0, A), (9.0, A)], 10.0, 5.0)


def test_quiet_when_the_pids_stayed_the_same_for_the_span() -> None:
    seen = [(0.0, A), (2.0, A), (4.0, A), (6.0, A)]
    assert quiet_since(seen, 6.0, 5.0)


def test_a_job_that_came_or_went_within_the_span_is_not_quiet() -> None:
    assert not quiet_since([(0.0, A), (2.0, B), (4.0, B), (6.0, B)], 6.0, 5.0)
    assert not quiet_since([(0.0, B), (2.0, B), (4.0, A), (6.0, A)], 6.0, 5.0)
    # ...until the span since it ended holds no change.
    assert quiet_since([(0.0, B), (2.0, B), (4.0, A), (6.0, A), (9.0, A)], 9.0, 5.0)
