"""A Roost cluster on network-namespace hosts, as an operator would set it up.

`RoostCluster.start()`: PostgreSQL (the state database) in the root namespace
on the bridge address; `roost cluster init` writes a bundle per host (its own keys
only), every host runs `roost cluster join` with its bundle (all at once),
then controllers, runners and routers each in their own namespace, and the
builder in the root namespace (it needs PyPI, which only the root namespace
reaches); `roost cluster admin-token` prints the API token the first
controller wrote at its start. Every daemon runs as `roost --data DIR ROLE`
with its role's own key, bound to its host's address.
Daemon output goes to BASE/logs/HOST.log.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy

from roost.controller.apitls import api_certificate
from roost.settings import Settings
from tests.cluster.harness import Host, Network
from tests.conftest import REPO, wait_until
from tests.pgserver import postgres_server
from tests.tmpfs import SIZE as TMPFS_SIZE

API_PORT = 8000
ROUTER_PORT = 8080
APP_DOMAIN = "localhost"


def wait_for(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll faster than the default: cluster timings are what these tests measure."""
    return wait_until(pred, timeout, what, interval)


class RoostCluster:
    def __init__(
        self,
        base: Path,
        *,
        controllers: int = 2,
        runners: int = 3,
        routers: int = 1,
        servicehosts: int = 0,
        backupds: int = 0,
        env: dict[str, str] | None = None,
        shared_data: bool = False,
        gateways: int = 0,
    ) -> None:
        self.base = base
        # Apps' data on SeaweedFS (cluster init's default with a servicehost):
        # off unless a test asks, so the others run no weed processes.
        self.shared_data = shared_data
        self.n_gateways = gateways
        self.gateways: list[Host] = []
        self.net = Network(base)
        self.counts = (controllers, runners, routers)
        self.more = (servicehosts, backupds)
        self.env_extra = dict(env or {})
        self.controllers: list[Host] = []
        self.runners: list[Host] = []
        self.routers: list[Host] = []
        self.servicehosts: list[Host] = []
        self.backupds: list[Host] = []
        self.builder_data = base / "builder" / "data"
        # Joined too: the tests' own view (route watcher, CLI), a router of the root namespace.
        self.observer_data = base / "observer" / "data"
        self.state_url = ""
        self.token = ""
        self._stack = contextlib.ExitStack()
        self._http = httpx.Client(timeout=10)
        self.api_ca = base / "api-ca.pem"  # the controllers' certificates

    # ------------------------------------------------------------ life cycle

    def __enter__(self) -> RoostCluster:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        self._on_tmpfs()
        self.base.chmod(0o755)  # the builder's unprivileged user walks down to its data
        net = self.net
        net.create()
        n_ctl, n_run, n_rtr = self.counts
        self.controllers = [net.add_host(f"ctl{i + 1}", 11 + i) for i in range(n_ctl)]
        self.runners = [net.add_host(f"run{i + 1}", 21 + i) for i in range(n_run)]
        self.routers = [net.add_host(f"rtr{i + 1}", 31 + i) for i in range(n_rtr)]
        n_svc, n_bak = self.more
        self.servicehosts = [net.add_host(f"svc{i + 1}", 41 + i) for i in range(n_svc)]
        self.backupds = [net.add_host(f"bak{i + 1}", 51 + i) for i in range(n_bak)]
        self.gateways = [net.add_host(f"gw{i + 1}", 61 + i) for i in range(self.n_gateways)]
        more_roles: list[str] = []
        if self.servicehosts:
            more_roles += ["--servicehosts", ",".join(h.ip for h in self.servicehosts)]
        if self.backupds:
            more_roles += ["--backupds", ",".join(h.ip for h in self.backupds)]
        if self.gateways:
            more_roles += ["--gateways", ",".join(h.ip for h in self.gateways)]
        if self.servicehosts and not self.shared_data:
            more_roles.append("--no-shared-data")
        state_args = self.state_args()
        bundles = self.base / "bundles"
        # The root namespace is one host: the builder, and the observer that
        # reads route tables as a router does.
        self.roost(
            "cluster", "init",
            "--controllers", ",".join(h.ip for h in self.controllers),
            "--runners", ",".join(h.ip for h in self.runners),
            "--routers", ",".join([*(h.ip for h in self.routers), net.gateway]),
            "--builders", net.gateway,
            *state_args,
            "--out", str(bundles),
            *more_roles,
        )  # fmt: skip
        joins = [(h.data, h.ip) for h in net.hosts.values()]
        joins += [(self.builder_data, net.gateway), (self.observer_data, net.gateway)]
        # Each host joins on its own, as operators would on their machines:
        # at once (a join only unpacks its bundle; one after the other they
        # were seconds of every cluster's start).
        self.roost_all(
            [
                ("--data", str(d), "cluster", "join", str(bundles / f"{ip}.tar.gz"))
                for d, ip in joins
            ]
        )
        self.start_state()
        self._trust_controllers()
        self.start_all()
        self.token = self.roost(
            "--data", str(self.controllers[0].data), "cluster", "admin-token", "--wait", "60"
        ).stdout.strip()
        for h in self.routers:
            wait_for(functools.partial(self.router_answers, h), 30, f"router {h.name}")
        wait_for(lambda: len(self.hosts_up()) == n_run, 30, "every runner to heartbeat")

    def _on_tmpfs(self) -> None:
        """BASE on a tmpfs of its own until `close` (tests/tmpfs.py says why:
        fsyncs and the removal of a cluster's data waited behind other
        processes' writes on the busy disk; a pair cluster's teardown took
        17-22 s on it, 1.3 s on a tmpfs). Not without root, not where BASE
        is a mount already (pair_cluster's) or holds something, not for
        SeaweedFS's volumes (`shared_data`: their tests measure the tree),
        nor when ROOST_TEST_LOGS asks for the daemons' logs after `close`."""
        if (
            os.geteuid() != 0
            or self.shared_data
            or os.environ.get("ROOST_TEST_LOGS")
            or os.path.ismount(self.base)
            or any(self.base.iterdir())
        ):
            return
        mount = ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE},mode=755", "roost-test"]
        subprocess.run([*mount, str(self.base)], check=True, capture_output=True)
        self._stack.callback(_unmount, self.base)  # the first in: the last out, after PostgreSQL

    def _trust_controllers(self) -> None:
        """Off loopback the controllers serve HTTPS with their own certificates.

        Made here as each controller would at its first start (it keeps them),
        so the tests and the CLI (ROOST_API_CA) trust exactly those.
        """
        pems = []
        for h in self.controllers:
            tls = api_certificate(h.data, Settings(bind_host=h.ip))
            assert tls is not None
            pems.append(tls.certfile.read_text())
        self.api_ca.write_text("".join(pems))
        self._http.close()
        self._http = httpx.Client(
            timeout=10, verify=ssl.create_default_context(cafile=str(self.api_ca))
        )

    def state_args(self) -> list[str]:
        """`cluster init`'s options for the state database: here one
        PostgreSQL, started now in the root namespace."""
        self.state_url = self._start_postgres()
        return ["--state", self.state_url]

    def start_state(self) -> None:
        """Start the state database's hosts once every host has joined
        (nothing here: the root namespace's PostgreSQL runs already)."""

    def _start_postgres(self) -> str:
        """PostgreSQL on loopback (initdb trusts only that) and the bridge address."""
        local = self._stack.enter_context(postgres_server(listen=f"127.0.0.1,{self.net.gateway}"))
        _trust_subnet(
            local.replace("127.0.0.1,", "", 1).replace(self.net.gateway, "127.0.0.1"),
            f"{self.net.subnet}.0/24",
        )
        return local.replace("127.0.0.1,", "", 1)

    def close(self) -> None:
        self._http.close()
        try:
            self.net.close()
        finally:
            self._stack.close()

    # ------------------------------------------------------------ processes

    def env_for(self, host_ip: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("ROOST_")}
        env.update(
            ROOST_BIND_HOST=host_ip,
            ROOST_LOG_LEVEL="INFO",
            ROOST_API_PORT=str(API_PORT),
            ROOST_ROUTER_PORT=str(ROUTER_PORT),
            ROOST_ROUTER_TLS_PORT="0",
            ROOST_DOMAIN=APP_DOMAIN,
            PYTHONUNBUFFERED="1",
        )
        env.update(self.env_extra)
        return env

    def role_of(self, host: Host) -> str:
        if host in self.controllers:
            return "controller"
        if host in self.runners:
            return "runner"
        if host in self.servicehosts:
            return "servicehost"
        if host in self.backupds:
            return "backupd"
        if host in self.gateways:
            return "gateway"
        return "router"

    def start_daemons(self, host: Host) -> None:
        role = self.role_of(host)
        argv = [sys.executable, "-m", "roost", "--data", str(host.data), role]
        if role == "router":
            argv += ["--port", str(ROUTER_PORT)]
        self.net.spawn(host, argv, self.env_for(host.ip), self.base / "logs" / f"{host.name}.log")
        if role == "controller" and (host.data / "keys" / "sentinel.key").exists():
            # Paired servicehosts' third sentinel, as `cluster join` says to start it.
            argv = [sys.executable, "-m", "roost", "--data", str(host.data), "sentinel"]
            log = self.base / "logs" / f"{host.name}-sentinel.log"
            self.net.spawn(host, argv, self.env_for(host.ip), log)

    def start_builder(self) -> None:
        argv = [sys.executable, "-m", "roost", "--data", str(self.builder_data), "builder"]
        self.net.spawn(
            None,
            argv,
            # The builder runs in the machine's own namespace here, whose
            # nftables ruleset no test may touch (its own table is tested in
            # tests/builder/test_firewall.py, inside a namespace).
            {**self.env_for(self.net.gateway), "ROOST_FIREWALL": "off"},
            self.base / "logs" / "builder.log",
        )

    def boot(self, host: Host) -> None:
        """Start a killed host's daemons again (its network back too)."""
        if host.partitioned:
            self.net.heal(host)
        self.start_daemons(host)

    def power_off(self, host: Host) -> None:
        """A host that dies at once: its network goes silent, its processes are killed."""
        self.net.partition(host)
        self.net.kill_host(host)

    def stop_all(self, grace: float = 30.0) -> list[str]:
        """Stop every daemon gracefully (SIGTERM to all at once, as a shutdown would).

        Returns what did not go by itself within `grace` (killed then): daemons
        still running, and processes left in a host once its daemons exited.
        """
        procs = [p for h in self.net.hosts.values() for p in h.procs] + self.net.root_procs
        for p in procs:
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + grace
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(max(0.1, deadline - time.monotonic()))
        stuck = [
            f"{h.name}: daemon {p.args!r}"
            for h in self.net.hosts.values()
            for p in h.procs
            if p.poll() is None
        ]
        for h in self.net.hosts.values():
            if all(p.poll() is not None for p in h.procs) and self.net.pids(h):
                stuck.append(f"{h.name}: processes {self.net.pids(h)} outlived its daemons")
            self.net.kill_host(h)
        for p in self.net.root_procs:
            if p.poll() is None:
                stuck.append(f"builder {p.args!r}")
                p.kill()
                p.wait()
        self.net.root_procs.clear()
        return stuck

    def start_all(self) -> None:
        """Every daemon: controllers first (until their API answers), then the rest."""
        for h in self.controllers:
            self.start_daemons(h)
        try:
            for h in self.controllers:
                wait_for(functools.partial(self.health, h), 60, f"the API of {h.name}")
        except AssertionError:
            print(self.logs_tail(40))  # why a controller did not come up (it may have exited)
            raise
        self.start_builder()
        for h in self.servicehosts + self.runners + self.routers + self.backupds + self.gateways:
            self.start_daemons(h)

    def logs_tail(self, lines: int = 60) -> str:
        out = []
        for log in sorted((self.base / "logs").glob("*.log")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            out.append(f"===== {log.name}\n" + "\n".join(text))
        return "\n".join(out)

    def roost(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        check: bool = True,
        timeout: float = 300,
    ) -> subprocess.CompletedProcess[str]:
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("ROOST_")}
        full_env.update(env or {})
        r = subprocess.run(
            [sys.executable, "-m", "roost", *args],
            env=full_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=REPO,
        )
        if check and r.returncode != 0:
            raise AssertionError(
                f"roost {' '.join(args)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
            )
        return r

    def roost_all(self, argvs: list[tuple[str, ...]], timeout: float = 300) -> None:
        """`self.roost(*args)` for each of `argvs`, all at once (a thread
        each, so a subclass's `roost`, e.g. a release's own code, runs
        them); each must succeed."""
        with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(argvs))) as pool:
            for done in [pool.submit(self.roost, *args, timeout=timeout) for args in argvs]:
                done.result()

    def cli(
        self, *args: str, controller: int = 0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """The user's CLI against one controller's API."""
        api = {
            "ROOST_API": self.api_url(self.controllers[controller]),
            "ROOST_TOKEN": self.token,
            "ROOST_API_CA": str(self.api_ca),
        }
        return self.roost("--data", str(self.observer_data), *args, env=api, check=check)

    # ------------------------------------------------------------ HTTP

    def api_url(self, host: Host) -> str:
        return f"https://{host.ip}:{API_PORT}"

    def api(self, method: str, path: str, controller: Host | None = None, **kw: Any) -> Any:
        """Call the API of `controller` (default: the first that answers)."""
        hosts = [controller] if controller is not None else self.controllers
        last: Exception | None = None
        for h in hosts:
            try:
                r = self._http.request(
                    method,
                    self.api_url(h) + path,
                    headers={"Authorization": f"Bearer {self.token}"},
                    timeout=5,
                    **kw,
                )
            except httpx.TransportError as exc:
                last = exc
                continue
            r.raise_for_status()
            return r.json()
        raise AssertionError(f"no controller answered {method} {path}: {last}")

    def health(self, host: Host) -> bool:
        try:
            return self._http.get(self.api_url(host) + "/api/health", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    def router_url(self, router: int = 0) -> str:
        return f"http://{self.routers[router].ip}:{ROUTER_PORT}"

    def get(
        self, app: str, path: str = "/", router: int = 0, timeout: float = 10
    ) -> httpx.Response:
        return self._http.get(
            self.router_url(router) + path, headers={"Host": f"{app}.{APP_DOMAIN}"}, timeout=timeout
        )

    def router_answers(self, host: Host) -> bool:
        try:
            self._http.get(f"http://{host.ip}:{ROUTER_PORT}/", timeout=1)
        except httpx.TransportError:
            return False
        return True

    # ------------------------------------------------------------ queries

    def hosts_up(self, controller: Host | None = None) -> list[dict[str, Any]]:
        return [h for h in self.api("GET", "/api/hosts", controller) if h["state"] == "up"]

    def where(self, app: str, controller: Host | None = None) -> list[dict[str, Any]]:
        return list(self.api("GET", f"/api/apps/{app}/where", controller))

    def host_ids(self) -> dict[str, Host]:
        """Runner host id -> its namespace host."""
        out = {}
        for h in self.runners:
            path = h.data / "runner" / "host_id"
            if path.exists():
                out[path.read_text().strip()] = h
        return out

    def leader(self) -> Host | None:
        """The controller holding the scheduler lease (by its metrics), if any."""
        for h in self.controllers:
            try:
                text = self._http.get(
                    self.api_url(h) + "/metrics",
                    headers={"Authorization": f"Bearer {self.token}"},
                    timeout=2,
                ).text
            except httpx.TransportError:
                continue
            if "\nroost_scheduler_leader 1.0" in text:
                return h
        return None

    def lease_token(self) -> int:
        engine = sqlalchemy.create_engine(self.state_url)
        try:
            with engine.connect() as c:
                row = c.execute(
                    sqlalchemy.text("SELECT token FROM leases WHERE name = 'scheduler'")
                ).first()
            return int(row[0]) if row else 0
        finally:
            engine.dispose()

    def deploy(self, app: str, source: Path) -> None:
        """Create `app` and deploy a copy of `source` (e.g. examples/hello)."""
        work = self.base / "apps" / app
        if work.exists():
            shutil.rmtree(work)
        shutil.copytree(source, work)
        self.cli("apps", "create", app)
        r = self.cli("deploy", str(work), "--app", app)
        assert "is live" in r.stdout, r.stdout + r.stderr

    def serving(self, app: str, text: str = "") -> bool:
        try:
            r = self.get(app, timeout=3)
        except httpx.TransportError:
            return False
        return r.status_code == 200 and text in r.text


@contextlib.contextmanager
def running_cluster(
    prefix: str, shared_data: bool = False, env: dict[str, str] | None = None, **counts: int
) -> Iterator[RoostCluster]:
    """A RoostCluster of `counts` started in a new directory, stopped on
    leaving; its daemons' logs printed when the body fails."""
    base = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        c = RoostCluster(base, shared_data=shared_data, env=env, **counts)
        with c:
            try:
                yield c
            except BaseException:
                print(c.logs_tail())
                raise
    finally:
        # Its tmpfs is gone with `close`; the mount point was left in /tmp.
        if not os.environ.get("ROOST_TEST_LOGS"):
            shutil.rmtree(base, ignore_errors=True)


def _unmount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True).returncode:
        # Busy: a process the test left (which its own checks report) still
        # holds it; detach it now, the kernel frees it when that process goes.
        subprocess.run(["umount", "--lazy", str(path)], capture_output=True)


def _trust_subnet(url: str, cidr: str) -> None:
    """Let the namespaces' controllers in: initdb trusts only local addresses."""
    engine = sqlalchemy.create_engine(url)
    try:
        with engine.connect() as c:
            hba = c.execute(sqlalchemy.text("SHOW hba_file")).scalar()
            with open(str(hba), "a") as fh:
                fh.write(f"host all all {cidr} trust\n")
            c.execute(sqlalchemy.text("SELECT pg_reload_conf()"))
    finally:
        engine.dispose()
    time.sleep(0.2)  # the postmaster re-reads pg_hba.conf on SIGHUP, asynchronously
