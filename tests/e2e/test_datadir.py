"""Issue 17 on one machine: an app's data directory is one live tree that
both its instances, its `run` sessions and rsync through the gateway read and
write at once, owned by the app's own user; another app sees none of it.

Before the live tree, each runner held a pulled copy: a file written through
one instance was a 404 through the other, and never reached rsync."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from roost.tenant.identity import APP_UID_BASE
from tests.conftest import wait_until
from tests.e2e.platform import Platform, running_platform

pytestmark = pytest.mark.e2e

HERE = Path(__file__).parent / "datadir_app"


@dataclass
class Site:
    platform: Platform
    key: Path

    def ssh_opts(self) -> list[str]:
        return [
            "-i", str(self.key), "-o", "IdentitiesOnly=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", "-o", "BatchMode=yes",
        ]  # fmt: skip

    def ssh(self, *command: str) -> subprocess.CompletedProcess[str]:
        port = str(self.platform.ssh_port)
        return subprocess.run(
            ["ssh", *self.ssh_opts(), "-p", port, "vcs@127.0.0.1", *command],
            capture_output=True,
            text=True,
            timeout=120,
        )

    def rsh(self) -> str:
        return " ".join(["ssh", *self.ssh_opts(), "-p", str(self.platform.ssh_port)])

    def tree(self, app: str) -> Path:
        return self.platform.data / "servicehost" / "appdata" / app

    def instances(self, app: str) -> list[int]:
        ps = self.platform.ps(app)
        return [int(i["port"]) for i in ps if i.get("port") and i["state"] == "up"]  # type: ignore[call-overload]


def _at(port: int, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=10)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    work = tmp_path_factory.mktemp("datadir")
    with running_platform() as p:
        for app in ("files", "other"):
            p.roost("apps", "create", app)
            p.roost("deploy", str(HERE), "--app", app)
        key = work / "id"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        httpx.post(
            f"http://127.0.0.1:{p.api_port}/api/keys",
            json={"key": (work / "id.pub").read_text()},
            headers={"Authorization": f"Bearer {p.token}"},
            timeout=30,
        ).raise_for_status()
        s = Site(p, key)
        wait_until(lambda: len(s.instances("files")) == 2, 120, "two instances of files")
        wait_until(lambda: len(s.instances("other")) >= 1, 120, "an instance of other")
        yield s


def test_a_file_written_through_one_instance_is_served_by_the_other(site: Site) -> None:
    one, two = site.instances("files")
    assert _at(one, "/put/media/a.txt?v=from-one").status_code == 200
    # At once: no sync interval between them, the same tree.
    r = _at(two, "/get/media/a.txt")
    assert r.status_code == 200 and r.text == "from-one"
    assert _at(one, "/get/media/a.txt").headers["X-Instance"] != r.headers["X-Instance"]
    # On the host it is the app's own user's, in the app's one tree.
    st = (site.tree("files") / "media" / "a.txt").stat()
    assert st.st_uid > APP_UID_BASE and st.st_uid == int(_at(two, "/me").text.split()[0])


def test_rsync_up_through_the_gateway_is_read_through_the_app(site: Site, tmp_path: Path) -> None:
    src = tmp_path / "up"
    (src / "docs").mkdir(parents=True)
    (src / "docs" / "b.txt").write_text("uploaded")
    r = subprocess.run(
        ["rsync", "-a", "-e", site.rsh(), f"{src}/", "vcs@127.0.0.1:files/uploads/"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    for port in site.instances("files"):
        got = _at(port, "/get/uploads/docs/b.txt")
        assert got.status_code == 200 and got.text == "uploaded"
    # The transfer ran as the app's user: the app owns what was uploaded.
    uploaded = site.tree("files") / "uploads" / "docs" / "b.txt"
    assert uploaded.stat().st_uid == site.tree("files").stat().st_uid > APP_UID_BASE
    # And what the app wrote comes back down.
    port = site.instances("files")[0]
    assert _at(port, "/put/made-by-app.txt?v=app").status_code == 200
    back = tmp_path / "back"
    r = subprocess.run(
        ["rsync", "-a", "-e", site.rsh(), "vcs@127.0.0.1:files/made-by-app.txt", f"{back}/"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert (back / "made-by-app.txt").read_text() == "app"


def test_a_run_session_shares_the_tree(site: Site) -> None:
    r = site.ssh("run", "files", 'echo -n from-run > "$ROOST_DATA_DIR/run.txt"')
    assert r.returncode == 0, r.stderr
    for port in site.instances("files"):
        assert _at(port, "/get/run.txt").text == "from-run"


def test_another_app_sees_nothing_of_the_tree(site: Site) -> None:
    port = site.instances("files")[0]
    assert _at(port, "/put/private.txt?v=mine").status_code == 200
    secret = site.tree("files") / "private.txt"
    assert secret.read_text() == "mine"  # there on the host
    probe = (
        f"cat {secret}; ls {site.tree('files')}; ls {site.tree('files').parent}; "
        f'ls "$ROOST_DATA_DIR/../files"; echo -n x > {site.tree("files")}/planted.txt; true'
    )
    r = site.ssh("run", "other", probe)
    assert r.returncode == 0, r.stderr
    assert "mine" not in r.stdout and "private.txt" not in r.stdout
    assert not (site.tree("files") / "planted.txt").exists()
    # Through the gateway the other app's name reaches only its own tree.
    r2 = site.ssh("run", "other", 'ls -a "$ROOST_DATA_DIR"')
    assert "private.txt" not in r2.stdout
