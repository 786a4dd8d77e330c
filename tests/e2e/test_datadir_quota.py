"""Issue 17: a per-app quota on the data directory (ROOST_DATA_QUOTA_MB, an
ext4 image per app: roost.datadir.quota), through the real platform: a
write past it fails with ENOSPC, the app keeps serving what it stored, and
`roost services info data` shows the quota and its use."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import wait_until
from tests.e2e.platform import Platform, running_platform

pytestmark = pytest.mark.e2e

HERE = Path(__file__).parent / "datadir_app"
MB = 1 << 20


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    with running_platform({"ROOST_DATA_QUOTA_MB": "8"}) as p:
        p.roost("apps", "create", "files")
        p.roost("deploy", str(HERE), "--app", "files")
        wait_until(lambda: p.get("files", "/me").status_code == 200, 120, "files to serve")
        yield p


def test_a_write_past_the_quota_fails_and_the_app_keeps_serving(platform: Platform) -> None:
    p = platform
    assert p.get("files", "/put/keep.txt?v=kept").status_code == 200
    r = httpx.get(
        f"http://127.0.0.1:{p.router_port}/fill/big.bin?mb=32",
        headers={"Host": "files.localhost"},
        timeout=60,
    )
    assert r.status_code == 507 and "No space left on device" in r.text, r.text
    # Every instance still serves, and what was stored before is intact.
    for _ in range(4):
        assert p.get("files", "/get/keep.txt").text == "kept"
    assert p.get("files", "/me").status_code == 200
    tree = p.data / "servicehost" / "appdata" / "files"
    assert (tree / "keep.txt").read_text() == "kept"

    def shown() -> dict[str, int]:
        out = p.roost("services", "info", "data", "--app", "files", "--json").stdout
        return json.loads(out)  # type: ignore[no-any-return]

    wait_until(lambda: shown()["used_bytes"] > 6 * MB, 60, "the use reported")
    info = shown()
    assert 7 * MB < info["quota_bytes"] < 12 * MB
    text = p.roost("services", "info", "data", "--app", "files").stdout
    assert "used of" in text
