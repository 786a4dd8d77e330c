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

from roost.datadir.quota import held_elsewhere
from tests.conftest import wait_until
from tests.e2e.platform import Platform, running_platform

pytestmark = pytest.mark.e2e

HERE = Path(__file__).parent / "datadir_app"
MB = 1 << 20


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    # On the disk: its trees are ext4 images mounted inside DATA, and on a
    # tmpfs the wait for the suspended app's sandboxes to let go of its tree
    # (held_elsewhere) ran out (tests/e2e -n 3, 2026-12-06); not looked into.
    with running_platform({"ROOST_DATA_QUOTA_MB": "8"}, tmpfs=False) as p:
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


def test_an_apps_own_quota_is_applied_grown_and_kept_above_its_data(platform: Platform) -> None:
    """`roost data quota`: an app given more than the platform's 8 MB stores
    more, up to its own size (then ENOSPC, the app serving on); a size below
    what it stores and a size that is not one are refused, changing nothing;
    a larger one grows its tree while it runs (a fresh release's instances)."""
    p = platform
    p.roost("apps", "create", "sized")

    def quota() -> dict[str, int]:
        out = p.roost("data", "quota", "--app", "sized", "--json").stdout
        return json.loads(out)  # type: ignore[no-any-return]

    def shown() -> dict[str, int]:
        out = p.roost("services", "info", "data", "--app", "sized", "--json").stdout
        return json.loads(out)  # type: ignore[no-any-return]

    bad = p.roost("data", "quota", "lots", "--app", "sized", check=False)
    assert bad.returncode == 2 and "not a size" in bad.stderr + bad.stdout
    assert quota()["quota_mb"] is None and quota()["effective_mb"] == 8
    p.roost("data", "quota", "24M", "--app", "sized")
    assert quota()["quota_mb"] == 24
    p.roost("deploy", str(HERE), "--app", "sized")
    wait_until(lambda: p.get("sized", "/me").status_code == 200, 120, "sized to serve")

    r = httpx.get(
        f"http://127.0.0.1:{p.router_port}/fill/big.bin?mb=64",
        headers={"Host": "sized.localhost"},
        timeout=60,
    )
    assert r.status_code == 507 and "No space left on device" in r.text, r.text
    assert p.get("sized", "/me").status_code == 200
    wait_until(lambda: shown()["used_bytes"] > 16 * MB, 60, "the use reported")
    assert 22 * MB < shown()["quota_bytes"] < 30 * MB  # its own, not the platform's 8

    below = p.roost("data", "quota", "12M", "--app", "sized", check=False)
    assert below.returncode != 0 and "remove files first" in below.stderr + below.stdout
    assert quota()["quota_mb"] == 24

    p.roost("data", "quota", "48M", "--app", "sized")
    # A fresh copy of the release rolls in instances with the new size.
    # They grow the tree online where the runner may (CAP_SYS_RESOURCE);
    # where it may not (this container), the tree stays mounted at its
    # size while the old instances hold it, and grows once none does.
    wait_until(
        lambda: "-v2-" in p.get("sized", "/me").headers.get("X-Instance", ""), 120, "v2 to serve"
    )
    p.roost("suspend", "--app", "sized")
    tree = p.data / "servicehost" / "appdata" / "sized"
    wait_until(lambda: not held_elsewhere(tree), 60, "sized's sandboxes to end")
    p.roost("resume", "--app", "sized")
    wait_until(lambda: p.get("sized", "/me").status_code == 200, 120, "sized to serve again")
    wait_until(lambda: shown()["quota_bytes"] > 40 * MB, 60, "the tree to grow")
    r = httpx.get(
        f"http://127.0.0.1:{p.router_port}/fill/more.bin?mb=12",
        headers={"Host": "sized.localhost"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    assert p.get("sized", "/me").status_code == 200
