"""Issue 17 in a cluster: one data tree per app on SeaweedFS, started by the
roles themselves from what `roost cluster init` wrote into the bundles (a
master and the filer on the controller host, a volume server and the mount
on the servicehost and on each of the two runners: three volume servers,
every file on two of them).

One cluster, one app with two instances, one on each runner: a file written
through one is served by the other at once; rsync up through the gateway
(which the servicehost's mount serves) is read through the app; another
app's `run` session sees nothing of it; the platform's quota (a mount of
each app's own, datadir/weedquota.py) refuses a write past it with ENOSPC
while the app goes on serving, and `roost services info` and `roost ps`
show the use; and the host of a copy (a runner, with its instance) is
killed while the other app writes: every write that returned (the app
fsync'd before it answered) is intact afterwards, read through the
instance the controller moved to the other runner."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
import pytest

from roost.datadir.seaweed import Endpoint
from tests.cluster.cluster import RoostCluster, running_cluster, wait_for
from tests.cluster.harness import Host
from tests.datadir.seaweedkit import listed

pytestmark = [pytest.mark.e2e, pytest.mark.cluster]

APP = "files"
OTHER = "other"
SOURCE = Path(__file__).parent.parent / "e2e" / "datadir_app"
SSH_PORT = 2222
QUOTA_MB = 6


@dataclass
class Site:
    rc: RoostCluster
    key: Path

    def ssh_args(self) -> list[str]:
        return [
            "ssh", "-i", str(self.key), "-p", str(SSH_PORT), "-o", "IdentitiesOnly=yes",
            "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
            "-o", "LogLevel=ERROR", "-o", "BatchMode=yes",
        ]  # fmt: skip

    @property
    def gateway(self) -> str:
        return f"vcs@{self.rc.gateways[0].ip}"

    def ssh(self, *command: str) -> subprocess.CompletedProcess[str]:
        argv = [*self.ssh_args(), self.gateway, *command]
        return subprocess.run(argv, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def site(cluster_ok: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with running_cluster(
        "roost-shared-data-",
        shared_data=True,
        controllers=1,
        runners=2,
        routers=1,
        servicehosts=1,
        gateways=1,
        env={"ROOST_DATA_QUOTA_MB": str(QUOTA_MB)},
    ) as c:
        c.deploy(APP, SOURCE)
        c.deploy(OTHER, SOURCE)
        key = tmp_path_factory.mktemp("shared-data") / "id"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        c.api("POST", "/api/keys", json={"key": key.with_suffix(".pub").read_text()})
        wait_for(lambda: len(_up_hosts(c)) == 2, 120, "an instance of files on each runner")
        yield Site(c, key)
    # Each host's mount cache and volumes: about 1.4 GB (the logs were
    # printed if a test failed).
    shutil.rmtree(c.base, ignore_errors=True)


@pytest.fixture
def rc(site: Site) -> RoostCluster:
    return site.rc


def _up_hosts(rc: RoostCluster, app: str = APP) -> set[str]:
    return {w["host_id"] for w in rc.where(app) if w["state"] == "up"}


def _get(rc: RoostCluster, path: str, app: str = APP) -> httpx.Response:
    return rc.get(app, path, timeout=30)


def _served_by_every_instance(
    rc: RoostCluster, path: str, text: str, instances: int, app: str = APP
) -> set[str]:
    """GET `path` through the router until `instances` instances answered
    (the router's table may take a moment to name a moved one: its table is
    re-read every 15 s, and an instance that failed a request is ejected for
    10 s); each answer must be `text`: no instance may lack the file."""
    seen: set[str] = set()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        r = _get(rc, path, app)
        assert r.status_code == 200 and r.text == text, (r.headers.get("X-Instance"), r.text)
        seen.add(r.headers["X-Instance"])
        if len(seen) == instances:
            return seen
    print(rc.where(app), rc.logs_tail())
    raise AssertionError(f"only {seen} answered {path}")


def test_a_file_written_through_one_instance_is_served_by_the_other_at_once(
    rc: RoostCluster,
) -> None:
    r = _get(rc, "/put/media/a.txt?v=uploaded")
    assert r.status_code == 200, r.text
    # Every GET after the PUT returned: no sync interval between the runners.
    served = _served_by_every_instance(rc, "/get/media/a.txt", "uploaded", 2)
    assert r.headers["X-Instance"] in served
    assert len(_up_hosts(rc)) == 2  # two runners, one instance each


def test_both_filers_name_the_file_and_every_mount_follows_the_first(rc: RoostCluster) -> None:
    """With the PostgreSQL state database the controller's filer and the
    first storage host's (a runner's, as cluster init lists runners before
    servicehosts) keep the tree in one store (datadir/weedstore.py): each
    lists what the app wrote (test_shared_datadir_filers kills one). Every
    mount, the second filer's host's too, is given its host's front
    (datadir/filerfront.py), which holds its sessions with the first."""
    plan = json.loads((rc.runners[0].data / "appdata.json").read_text())
    assert plan["filers"] == [rc.controllers[0].ip, rc.runners[0].ip], plan["filers"]
    for filer in plan["filers"]:
        names = listed(Endpoint(filer, 7152), f"/{APP}/media/")
        assert "a.txt" in names, (filer, names)
    for host in [*rc.runners, *rc.servicehosts]:
        # Sessions, not health checks (a connection held across both looks).
        first = _front_sessions(rc, host)
        time.sleep(0.5)
        mounts, peers = _front_sessions(rc, host)
        assert mounts and set(mounts) == {f"-filer={host.ip}:7153"}, (host.ip, mounts)
        assert peers & first[1] == {rc.controllers[0].ip}, (host.ip, peers, first[1])


def _front_sessions(rc: RoostCluster, host: Host) -> tuple[list[str], set[str]]:
    """The -filer= of each weed mount on `host`, and the filers its front
    holds established connections to (`ss` in the host's namespace)."""
    mounts = []
    for pid in rc.net.pids(host):
        try:
            argv = psutil.Process(pid).cmdline()
        except psutil.Error:
            continue
        if len(argv) > 1 and argv[1] == "mount":
            mounts += [a for a in argv if a.startswith("-filer=")]
    ss = rc.net.run_in(host, ["ss", "-Htnp", "state", "established", "( dport = :17152 )"])
    peers = {ln.split()[3].rsplit(":", 1)[0] for ln in ss.stdout.splitlines() if "haproxy" in ln}
    return mounts, peers


def test_rsync_up_through_the_gateway_is_read_through_the_app(site: Site, tmp_path: Path) -> None:
    src = tmp_path / "up"
    (src / "docs").mkdir(parents=True)
    (src / "docs" / "b.txt").write_text("rsynced")
    rsh = " ".join(site.ssh_args())
    r = subprocess.run(
        ["rsync", "-a", "-e", rsh, f"{src}/", f"{site.gateway}:{APP}/uploads/"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    _served_by_every_instance(site.rc, "/get/uploads/docs/b.txt", "rsynced", 2)


def test_another_app_sees_nothing_of_the_tree(site: Site) -> None:
    assert _get(site.rc, "/put/private.txt?v=mine").status_code == 200
    # Wherever the other app's session runs, the files tree is at the same
    # place below the runner's DATA: try every runner's path, and the parent.
    trees = [h.data / "servicehost" / "appdata" / APP for h in site.rc.runners]
    probe = "; ".join(
        [f"cat {t}/private.txt; ls {t} {t.parent}" for t in trees]
        + ['ls "$ROOST_DATA_DIR/../files"; cat "$ROOST_DATA_DIR/../files/private.txt"', "true"]
    )
    r = site.ssh("run", OTHER, probe)
    assert r.returncode == 0, r.stderr
    assert "mine" not in r.stdout and "private.txt" not in r.stdout, r.stdout
    # Its own tree it reaches.
    r2 = site.ssh(
        "run", OTHER, 'echo -n own > "$ROOST_DATA_DIR/own.txt" && cat "$ROOST_DATA_DIR/own.txt"'
    )
    assert r2.returncode == 0 and r2.stdout == "own", (r2.stdout, r2.stderr)


def test_the_quota_refuses_a_write_past_it_and_the_app_keeps_serving(site: Site) -> None:
    rc = site.rc
    stored, refused = 0, ""
    for i in range(3 * QUOTA_MB):
        r = _get(rc, f"/fill/big{i}?mb=1")
        if r.status_code == 507:
            refused = r.text
            break
        assert r.status_code == 200, r.text
        stored += 1
        time.sleep(1)  # an uploader's pace
    assert "No space left on device" in refused or "Disk quota exceeded" in refused, refused
    # Not refused before the quota is used. After it, the mount learns the
    # collection's size from the master's figures, which the volume servers
    # send every few seconds: what was written meanwhile passes (printed).
    assert stored >= QUOTA_MB - 1, stored
    print(f"quota {QUOTA_MB} MB: {stored} MB stored before the refusal")
    # Full, and still serving what it stored.
    _served_by_every_instance(rc, "/get/media/a.txt", "uploaded", 2)
    assert _get(rc, "/get/uploads/docs/b.txt").text == "rsynced"

    # What it stores and may store, as the servicehost's mount of it counts.
    def shown() -> str:
        return rc.cli("services", "info", "data", "--app", APP).stdout

    wait_for(lambda: f"of {QUOTA_MB}" in shown(), 60, "the data quota in services info")

    # Full, as the refusal said, once the servicehost's next status has the
    # master's figures (pushed every few seconds).
    def ps() -> str:
        return rc.cli("ps", "--app", APP).stdout

    wait_for(lambda: "(full: writes fail with ENOSPC)" in ps(), 60, f"roost ps: full\n{ps()}")


def test_a_copy_host_killed_during_writes_loses_no_acknowledged_write(rc: RoostCluster) -> None:
    # The other app: files' quota is full by now (the test above).
    assert _get(rc, "/put/media/first.txt?v=before", OTHER).status_code == 200
    wait_for(lambda: len(_up_hosts(rc, OTHER)) == 2, 60, "other on both runners")
    acked: dict[str, str] = {}
    failed: list[int] = []
    stop = threading.Event()

    def writer() -> None:
        i = 0
        while not stop.is_set() and i < 2000:
            i += 1
            value = f"v{i}-" + "x" * (i % 97)
            try:
                r = _get(rc, f"/put/w/f{i}?v={value}", OTHER)
            except httpx.HTTPError:
                failed.append(i)
                continue
            if r.status_code == 200 and r.text == "stored\n":
                acked[f"w/f{i}"] = value
            else:
                failed.append(i)

    t = threading.Thread(target=writer)
    t.start()
    try:
        wait_for(lambda: len(acked) >= 30, 60, "writes under way")
        victim = rc.runners[1]  # its volume server holds a copy of some files
        rc.power_off(victim)
        killed_at, n = time.monotonic(), len(acked)
        # Writes go on (two volume servers left: 001 still places a file).
        wait_for(lambda: len(acked) >= n + 30, 150, "writes after the host's death")
        # Writes whose copy was to go to the dead host wait until the master
        # drops it (its heartbeat stream times out): measured, not asserted.
        print(f"30 writes after the host's death within {time.monotonic() - killed_at:.1f}s")
        # The controller moves its instance to the other runner.
        (alive,) = [h for h, host in rc.host_ids().items() if host is rc.runners[0]]

        def both_on_the_survivor() -> bool:
            up = [w["host_id"] for w in rc.where(OTHER) if w["state"] == "up"]
            return up == [alive, alive]

        wait_for(both_on_the_survivor, 180, "both instances up on the surviving runner")
    finally:
        stop.set()
        t.join(60)
    assert len(acked) >= 60
    # Through both instances, the moved one included: every acknowledged write.
    lost = []
    for name, value in acked.items():
        r = _get(rc, f"/get/{name}", OTHER)
        if r.status_code != 200 or r.text != value:
            lost.append((name, r.status_code, r.text[:40]))
    assert lost == [], f"{len(lost)} of {len(acked)} acknowledged writes lost: {lost[:5]}"
    # The moved instance sees what was written before the move too.
    _served_by_every_instance(rc, "/get/media/first.txt", "before", 2, OTHER)


def test_an_apps_own_quota_in_the_shared_tree(rc: RoostCluster) -> None:
    """`roost data quota` in a cluster (after the host's death above: the
    app's instances are on the surviving runner): a fresh release's
    instances mount the app's collection with its own size, above the
    platform's, and a write past that is ENOSPC while the app serves."""
    own = 3 * QUOTA_MB
    out = rc.cli("data", "quota", f"{own}M", "--app", OTHER, "--json").stdout
    release = json.loads(out)["release"]
    assert release is not None

    def on_the_new_release() -> bool:
        seen = {_get(rc, "/me", OTHER).headers.get("X-Instance", "") for _ in range(4)}
        return all(f"-v{release}-" in s for s in seen)

    wait_for(on_the_new_release, 180, f"other's release {release} to serve")
    stored, refused = 0, ""
    for i in range(3 * own):
        r = _get(rc, f"/fill/own{i}?mb=1", OTHER)
        if r.status_code == 507:
            refused = r.text
            break
        assert r.status_code == 200, r.text
        stored += 1
        time.sleep(1)  # an uploader's pace, as above
    assert "No space left on device" in refused or "Disk quota exceeded" in refused, refused
    # Past the platform's size: the app's own applies (what was written
    # before, the other test's files, counts in the default collection).
    assert stored > QUOTA_MB, stored
    print(f"own quota {own} MB: {stored} MB stored before the refusal")
    assert _get(rc, "/get/media/first.txt", OTHER).text == "before"
