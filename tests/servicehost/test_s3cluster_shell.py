"""The cluster bucket store's `weed shell` runs (servicehost/s3cluster.py),
with a stand-in weed: a failure is read from its output (`error: ...`)
even with status 0, and one that hangs (its master silent: measured with
the real one) is ended, each an S3Problem saying so."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from roost.datadir.s3cluster import Gateways
from roost.datadir.seaweed import Endpoint
from roost.servicehost import s3cluster
from roost.servicehost.s3cluster import ClusterBuckets
from roost.servicehost.s3filer import S3Problem
from roost.servicehost.state import HostState


def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> ClusterBuckets:
    weed = tmp_path / "weed"
    weed.write_text(f"#!/bin/sh\n{script}\n")
    weed.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    gw = Gateways(Endpoint("127.0.0.1", 1), Endpoint("127.0.0.1", 2), (Endpoint("127.0.0.1", 3),))
    return ClusterBuckets(gw, HostState(), lambda: None)


def test_an_error_line_is_a_failure_even_with_status_0(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ok = store(tmp_path, monkeypatch, "cat >/dev/null; echo '> s3.configure'; echo '{}'")
    asyncio.run(ok._shell("s3.configure -apply\nexit\n"))
    failing = store(tmp_path, monkeypatch, "cat >/dev/null; echo 'error: rpc error: Unavailable'")
    with pytest.raises(S3Problem, match="rpc error: Unavailable"):
        asyncio.run(failing._shell("s3.configure -apply\nexit\n"))


def test_a_shell_that_hangs_is_ended(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3cluster, "SHELL_TIMEOUT_S", 0.5)
    hung = store(tmp_path, monkeypatch, "exec sleep 30")
    began = time.monotonic()
    with pytest.raises(S3Problem, match="did not finish"):
        asyncio.run(hung._shell("exit\n"))
    assert time.monotonic() - began < 10
