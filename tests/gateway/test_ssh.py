"""The SSH gateway end to end, with the real OpenSSH client, git, rsync and scp
against `roost up` on loopback: push deploys, `ssh -t run` is a real
terminal, plain pipes are byte-exact, rsync and scp reach the data directory
and nothing beyond it."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pexpect
import psutil
import pytest

from roost.controller.admintoken import read_admin_token
from tests.conftest import REPO, free_port, processes_under, wait_until
from tests.sshclient import git_over_ssh, ssh_opts

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        not all(shutil.which(t) for t in ("ssh", "scp", "rsync", "git", "ssh-keygen")),
        reason="needs the OpenSSH client, git and rsync (apt-get install openssh-client git rsync)",
    ),
]

APP = "hello"


@dataclass
class Gw:
    data: Path
    base: Path
    api: str
    router_port: int
    ssh_port: int
    token: str
    key: Path  # the admin's SSH key

    def ssh_opts(self, key: Path | None = None) -> list[str]:
        return ssh_opts(key or self.key)

    def ssh(
        self, *command: str, key: Path | None = None, stdin: bytes = b"", timeout: float = 120
    ) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["ssh", *self.ssh_opts(key), "-p", str(self.ssh_port), "vcs@127.0.0.1", *command],
            input=stdin,
            capture_output=True,
            timeout=timeout,
        )

    def rsh(self) -> str:
        return " ".join(["ssh", *self.ssh_opts(), "-p", str(self.ssh_port)])

    def git(
        self, repo: Path, *args: str, key: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        return git_over_ssh(repo, self.ssh_port, key or self.key, *args)

    def get(self, path: str = "/") -> httpx.Response:
        return httpx.get(
            f"http://127.0.0.1:{self.router_port}{path}",
            headers={"Host": f"{APP}.localhost"},
            timeout=10,
        )

    def api_post(self, path: str, body: dict[str, object], token: str | None = None) -> object:
        r = httpx.post(
            f"{self.api}{path}",
            json=body,
            headers={"Authorization": f"Bearer {token or self.token}"},
            timeout=30,
        )
        assert r.status_code < 300, r.text
        return r.json()


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return path


@pytest.fixture(scope="module")
def gw() -> Iterator[Gw]:
    # World-searchable: the builder's unprivileged user must reach DATA/builder.
    base = Path(tempfile.mkdtemp(prefix="roost-gw-"))
    base.chmod(0o755)
    data = base / "data"
    api_port, router_port, ssh_port = free_port(), free_port(), free_port()
    log = base / "up.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable, "-m", "roost", "--data", str(data), "up",
                "--api-port", str(api_port), "--router-port", str(router_port),
                "--ssh-port", str(ssh_port),
                # Not the default 8443: another test's platform may hold it.
                "--tls-port", str(free_port()),
            ],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        api = f"http://127.0.0.1:{api_port}"
        wait_until(
            lambda: httpx.get(f"{api}/api/health", timeout=1).status_code == 200, 60, "the API"
        )
        token = read_admin_token(data)
        key = _keygen(base / "id_admin")
        g = Gw(data, base, api, router_port, ssh_port, token, key)
        g.api_post("/api/keys", {"key": (base / "id_admin.pub").read_text()})
        g.api_post("/api/apps", {"name": APP})
        wait_until(lambda: g.ssh("run").returncode == 2, 60, "the gateway to answer")
        yield g
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        finally:
            print(log.read_text()[-6000:])
        remaining = processes_under(data)
        shutil.rmtree(base, ignore_errors=True)
        assert not remaining, f"processes left behind: {[q.cmdline() for q in remaining]}"


@pytest.fixture(scope="module")
def deployed(gw: Gw) -> Path:
    """examples/hello in a git repository, pushed once (the first test checks the push)."""
    repo = gw.base / "repo"
    shutil.copytree(REPO / "examples" / "hello", repo)
    for args in (
        ("init", "-q", "-b", "main"),
        ("add", "-A"),
        ("-c", "user.email=dev@example.com", "-c", "user.name=dev", "commit", "-qm", "first"),
    ):
        subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)
    r = gw.git(repo, "push", f"ssh://vcs@127.0.0.1:{gw.ssh_port}/{APP}", "main")
    assert r.returncode == 0, r.stderr
    # The build log streamed back on the push, as it happened.
    assert "remote: -----> building" in r.stderr and "is live" in r.stderr, r.stderr
    return repo


def _commit(repo: Path, message: str) -> None:
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run(
        [
            "git",
            "-c",
            "user.email=dev@example.com",
            "-c",
            "user.name=dev",
            "commit",
            "-qm",
            message,
        ],
        cwd=repo,
        check=True,
    )


def test_push_deploys_and_a_second_push_redeploys(gw: Gw, deployed: Path) -> None:
    wait_until(lambda: "Hello from Roost!" in gw.get().text, 30, "the first release")

    app_py = deployed / "app.py"
    app_py.write_text(app_py.read_text().replace("Hello from Roost!", "Pushed again!"))
    _commit(deployed, "second")
    # scp-like syntax (the port comes from GIT_SSH_COMMAND) and branch master.
    r = gw.git(deployed, "push", f"vcs@127.0.0.1:{APP}", "main:master")
    assert r.returncode == 0, r.stderr
    assert "v2 is live" in r.stderr, r.stderr
    wait_until(lambda: "Pushed again!" in gw.get().text, 30, "the second release")


def test_failed_build_rejects_the_push_and_the_release_keeps_serving(
    gw: Gw, deployed: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken"
    subprocess.run(["git", "clone", "-q", str(deployed), str(broken)], check=True)
    (broken / "epio.ini").write_text("[wsgi]\nentrypoint = nosuchmodule:app\n")
    _commit(broken, "broken")
    r = gw.git(broken, "push", "-f", f"ssh://vcs@127.0.0.1:{gw.ssh_port}/{APP}", "HEAD:main")
    assert r.returncode != 0
    assert "nosuchmodule" in r.stderr and "deploy failed" in r.stderr, r.stderr
    assert "pre-receive hook declined" in r.stderr
    assert gw.get().status_code == 200


def test_unknown_key_and_other_accounts_are_refused(gw: Gw, deployed: Path) -> None:
    stranger = _keygen(gw.base / "id_stranger")
    r = gw.ssh("run", APP, "true", key=stranger)
    assert r.returncode == 255 and b"Permission denied" in r.stderr
    r2 = gw.git(deployed, "push", f"ssh://vcs@127.0.0.1:{gw.ssh_port}/{APP}", "main", key=stranger)
    assert r2.returncode != 0 and "Permission denied" in r2.stderr

    # A known key of another account: logs in, but cannot touch this app.
    gw.api_post("/api/accounts", {"email": "other@example.com", "password": "secret-pass"})
    login = httpx.post(
        f"{gw.api}/api/login", json={"email": "other@example.com", "password": "secret-pass"}
    ).json()
    other = _keygen(gw.base / "id_other")
    gw.api_post("/api/keys", {"key": (gw.base / "id_other.pub").read_text()}, login["token"])
    r3 = gw.git(deployed, "push", f"ssh://vcs@127.0.0.1:{gw.ssh_port}/{APP}", "main", key=other)
    assert r3.returncode != 0 and f"no app named '{APP}'" in r3.stderr, r3.stderr
    r4 = gw.ssh("run", APP, "true", key=other)
    assert r4.returncode != 0 and b"no app named" in r4.stderr


def test_run_with_a_terminal(gw: Gw, deployed: Path) -> None:
    child = pexpect.spawn(
        "ssh",
        [*gw.ssh_opts(), "-tt", "-p", str(gw.ssh_port), "vcs@127.0.0.1", "run", APP, "python"],
        dimensions=(24, 80),
        timeout=60,
    )
    try:
        child.expect_exact(">>> ")
        # The app's environment: its virtualenv's Python, with flask importable.
        child.sendline("import flask, os; print(os.environ['ROOST_APP'], 6*7)")
        child.expect_exact(f"{APP} 42")
        child.expect_exact(">>> ")
        child.setwinsize(40, 132)  # the client's pty: ssh gets SIGWINCH and relays it
        time.sleep(0.5)
        child.sendline("import shutil; print(shutil.get_terminal_size())")
        child.expect_exact("columns=132, lines=40")
        child.expect_exact(">>> ")
        child.sendline("while True: pass")
        time.sleep(1.0)
        child.sendcontrol("c")  # through the pty's line discipline: SIGINT
        child.expect_exact("KeyboardInterrupt")
        child.expect_exact(">>> ")
        child.sendline("exit(3)")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    assert child.exitstatus == 3


def test_plain_pipes_are_byte_exact(gw: Gw, deployed: Path) -> None:
    payload = bytes(range(256)) * 1000
    r = gw.ssh(
        "run", APP, "python -c 'import sys; sys.stdout.buffer.write(bytes(range(256))*1000)'"
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout == payload
    # And stdin, through to EOF, with stderr kept apart and the exit status.
    data = os.urandom(300_000)
    r2 = gw.ssh("run", APP, "sha256sum; echo to-stderr >&2; exit 5", stdin=data)
    assert r2.returncode == 5
    assert r2.stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()
    assert r2.stderr == b"to-stderr\n"


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_rsync_round_trip_and_escape_refused(gw: Gw, deployed: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "a.txt").write_text("alpha\n")
    (src / "sub" / "b.bin").write_bytes(os.urandom(200_000))
    (src / "sub" / "deeper" / "c.txt").write_text("gamma\n")
    up = subprocess.run(
        ["rsync", "-a", "-e", gw.rsh(), f"{src}/", f"vcs@127.0.0.1:{APP}/uploads/"],
        capture_output=True,
        timeout=120,
    )
    assert up.returncode == 0, up.stderr
    back = tmp_path / "back"
    down = subprocess.run(
        ["rsync", "-a", "-e", gw.rsh(), f"vcs@127.0.0.1:{APP}/uploads/", f"{back}/"],
        capture_output=True,
        timeout=120,
    )
    assert down.returncode == 0, down.stderr
    assert _tree(back) == _tree(src)

    # The runner refreshes its copy before a command runs there.
    r = gw.ssh("run", APP, 'cat "$ROOST_DATA_DIR/uploads/sub/deeper/c.txt"')
    assert r.stdout == b"gamma\n", r.stderr

    for remote in (f"{APP}/../escaped", f"{APP}/uploads/../../escaped", "/etc"):
        bad = subprocess.run(
            ["rsync", "-a", "-e", gw.rsh(), str(src / "a.txt"), f"vcs@127.0.0.1:{remote}"],
            capture_output=True,
            timeout=60,
        )
        assert bad.returncode != 0, remote
    assert not (gw.data / "servicehost" / "appdata" / "escaped").exists()


def test_scp_round_trip_and_escape_refused(gw: Gw, deployed: Path, tmp_path: Path) -> None:
    scp = ["scp", "-O", *gw.ssh_opts(), "-P", str(gw.ssh_port)]
    f = tmp_path / "report.bin"
    f.write_bytes(os.urandom(100_000))
    up = subprocess.run([*scp, str(f), f"vcs@127.0.0.1:{APP}/report.bin"], capture_output=True)
    assert up.returncode == 0, up.stderr
    got = tmp_path / "got.bin"
    down = subprocess.run([*scp, f"vcs@127.0.0.1:{APP}/report.bin", str(got)], capture_output=True)
    assert down.returncode == 0, down.stderr
    assert got.read_bytes() == f.read_bytes()

    tree = tmp_path / "tree"
    (tree / "inner").mkdir(parents=True)
    (tree / "inner" / "x.txt").write_text("x\n")
    assert subprocess.run([*scp, "-r", str(tree), f"vcs@127.0.0.1:{APP}/t"]).returncode == 0
    assert (
        subprocess.run([*scp, "-r", f"vcs@127.0.0.1:{APP}/t", str(tmp_path / "t2")]).returncode == 0
    )
    assert (tmp_path / "t2" / "inner" / "x.txt").read_text() == "x\n"

    # OpenSSH >= 9 speaks SFTP unless told -O: the same, through the SFTP server.
    sftp = [x for x in scp if x != "-O"]
    r = subprocess.run([*sftp, str(f), f"vcs@127.0.0.1:{APP}/sftp.bin"], capture_output=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([*sftp, "-r", f"vcs@127.0.0.1:{APP}/t", str(tmp_path / "t3")])
    assert r.returncode == 0 and (tmp_path / "t3" / "inner" / "x.txt").read_text() == "x\n"
    for remote in (f"{APP}/../../etc/passwd", "/etc/passwd", "other-app/x"):
        r = subprocess.run([*sftp, str(f), f"vcs@127.0.0.1:{remote}"], capture_output=True)
        assert r.returncode != 0, remote
    listing = subprocess.run(
        ["sftp", *gw.ssh_opts(), "-P", str(gw.ssh_port), "-b", "-", "vcs@127.0.0.1"],
        input=b"ls /\nls hello\n",
        capture_output=True,
    )
    assert listing.returncode == 0, listing.stderr
    assert b"sftp.bin" in listing.stdout and b"report.bin" in listing.stdout

    bad = subprocess.run(
        [*scp, str(f), f"vcs@127.0.0.1:{APP}/../../etc/passwd"], capture_output=True
    )
    assert bad.returncode != 0 and b"leaves the app's data directory" in bad.stderr
    bad2 = subprocess.run(
        [*scp, "vcs@127.0.0.1:/etc/passwd", str(tmp_path / "p")], capture_output=True
    )
    assert bad2.returncode != 0 and not (tmp_path / "p").exists()


def _running(marker: str) -> list[psutil.Process]:
    found = []
    for p in psutil.process_iter(["cmdline"]):
        try:
            if " ".join(p.info["cmdline"] or []) == marker and p.status() != "zombie":
                found.append(p)
        except psutil.NoSuchProcess:
            continue
    return found


@pytest.mark.parametrize("tty", [True, False])
def test_client_disconnect_stops_the_command(gw: Gw, deployed: Path, tty: bool) -> None:
    marker = f"sleep {4000 + tty}"
    client = subprocess.Popen(
        [
            "ssh", *gw.ssh_opts(), *(["-tt"] if tty else []), "-p", str(gw.ssh_port),
            "vcs@127.0.0.1", "run", APP, marker,
        ],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_until(lambda: _running(marker), 60, "the command to start on the runner")
    finally:
        client.kill()
        client.wait()
    wait_until(lambda: not _running(marker), 30, "the command to be stopped")
