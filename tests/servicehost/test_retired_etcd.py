"""A replaced servicehost's record in its pair's etcd scope
(pgreplace.mark_retired / replaced_by), against a real etcd: what a
servicehost back after its replacement reads before it runs anything of
its pair (servicehost/retirement.py)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import pytest

from roost.servicehost import pgreplace
from roost.servicehost.pgpair import PairPlan, for_host, new_pair
from tests.conftest import free_port

ETCD = shutil.which("etcd")  # scripts/install installs it (the state database's)


@pytest.fixture
def etcd(tmp_path: Path) -> Iterator[int]:
    assert ETCD is not None, "etcd is not installed (scripts/install)"
    client, peer = free_port(), free_port()
    proc = subprocess.Popen(
        [
            ETCD, "--data-dir", str(tmp_path / "etcd"), "--name", "e1",
            "--listen-client-urls", f"http://127.0.0.1:{client}",
            "--advertise-client-urls", f"http://127.0.0.1:{client}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"e1=http://127.0.0.1:{peer}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{client}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "etcd did not start"
            time.sleep(0.1)
        yield client
    finally:
        proc.terminate()
        proc.wait(10)


def plan_on(port: int, me: str) -> PairPlan:
    p = new_pair("p1", ["10.0.0.1", "10.0.0.2"], ["127.0.0.1", "127.0.0.2", "127.0.0.3"])
    return for_host(msgspec.structs.replace(p, etcd_client_port=port), me)


def test_a_replaced_member_reads_who_took_its_place(etcd: int) -> None:
    old = plan_on(etcd, "10.0.0.1")

    async def go() -> None:
        assert await pgreplace.replaced_by(old, "10.0.0.1") == ""
        await pgreplace.mark_retired(plan_on(etcd, "10.0.0.2"), "10.0.0.1", "10.0.0.5")
        assert await pgreplace.replaced_by(old, "10.0.0.1") == "10.0.0.5"
        assert await pgreplace.replaced_by(old, "10.0.0.2") == "", "the survivor is not"

    asyncio.run(go())


def test_no_etcd_answering_is_an_error_not_a_no() -> None:
    p = plan_on(free_port(), "10.0.0.1")
    with pytest.raises(OSError, match="no etcd member answered"):
        asyncio.run(pgreplace.replaced_by(p, "10.0.0.1", timeout=0.5))
