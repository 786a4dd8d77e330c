"""The runner-local data proxy: one address per database that follows its primary.

In a cluster an app's PostgreSQL is a Patroni pair (a primary and a
synchronous standby on two servicehosts) and its Redis a primary and a
replica watched by Sentinel; either may change hosts at any time. Apps keep
one address: HAProxy on each runner listens once per pair (or per Redis) on
the runner's own address and forwards each new connection to whichever
server its health check calls the primary right now. Connections to a
server marked down are cut (`on-marked-down shutdown-sessions`), so a
client of the old primary reconnects through the same address and lands on
the new one.

The interface (what helper code feeding this module builds, e.g. the Redis
side from Sentinel's view):

    ProxyListener(
        kind="postgres" | "redis",
        name="pair-a",                 # [a-z0-9-], unique per kind
        local_port=6001,               # where apps connect, on the runner
        servers=(ProxyServer(host, port, check_port), ...),
        password="",                   # Redis: the AUTH the check sends
    )

- kind "postgres": `check_port` is the member's Patroni REST port; the check
  is `GET /primary` (200 only on the member holding the leader key), so a
  standby or a Patroni cut off from etcd (which demotes itself) takes no
  connection.
- kind "redis": `check_port` is the Redis port itself (a `tcp-check`):
  AUTH <password>, expect +OK; PING, expect +PONG; INFO replication,
  expect `role:master`; QUIT. A replica answers role:slave and is skipped.

`render(listeners, bind)` is pure (tested without sockets): the whole
configuration text, deterministic for the same listeners in any order.
`DataProxy` is the thin adapter: it writes the file, validates it with
`haproxy -c`, and runs HAProxy in master-worker mode (`-W`); a change is a
SIGUSR2 to the master, which starts new workers on the listening sockets
it keeps open while the old ones finish their connections, so a reload
drops no connection and refuses none. HAProxy outlives the runner daemon
(runner/proxyproc.py): a runner restart leaves it serving, and the next
runner adopts it; only a full stop of the runner stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, NamedTuple

from roost.proc import spawn
from roost.runner import proxyproc

log = logging.getLogger("roost.runner")

HAPROXY = "/usr/sbin/haproxy"
ProxyKind = Literal["postgres", "redis"]
KINDS: tuple[ProxyKind, ...] = ("postgres", "redis")
# How often a server is checked and how many checks flip it: a dead primary
# is out within ~2 s, a new one in within ~0.5 s of Patroni promoting it (a
# server that is down, the standby, is checked twice as often: that check
# is the last step of a failover before the app's reconnect).
CHECK_INTER_MS = 1000
DOWN_INTER_MS = 500
FALL = 2
RISE = 1
# An old worker after a reload keeps its connections at most this long.
HARD_STOP_AFTER = "10m"
_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
# A password goes into the check's bytes verbatim: only characters that need
# no escaping there (what secrets.token_urlsafe makes).
_PASSWORD = re.compile(r"[A-Za-z0-9_-]*")
_HOST = re.compile(r"[A-Za-z0-9.:_-]+")


class ProxyError(ValueError):
    """The listeners asked for cannot make one configuration."""


class ProxyServer(NamedTuple):
    host: str
    port: int
    check_port: int


@dataclass(frozen=True)
class ProxyListener:
    kind: ProxyKind
    name: str
    local_port: int
    servers: tuple[ProxyServer, ...] = field(default_factory=tuple)
    password: str = ""

    def __post_init__(self) -> None:
        # Accept plain (host, port, check_port) tuples from callers.
        object.__setattr__(self, "servers", tuple(ProxyServer(*s) for s in self.servers))


def _addr(host: str) -> str:
    """host as HAProxy's address:port takes it (IPv6 in brackets)."""
    bare = host.strip("[]")
    return f"[{bare}]" if ":" in bare else bare


def _check(listeners: list[ProxyListener]) -> None:
    seen_ports: dict[int, str] = {}
    seen_names: set[tuple[str, str]] = set()
    for lst in listeners:
        what = f"{lst.kind} listener {lst.name!r}"
        if lst.kind not in KINDS:
            raise ProxyError(f"{what}: unknown kind (known: {', '.join(KINDS)})")
        if not _NAME.fullmatch(lst.name):
            raise ProxyError(f"{what}: a name is lower-case letters, digits and '-'")
        if (lst.kind, lst.name) in seen_names:
            raise ProxyError(f"{what} is named twice")
        seen_names.add((lst.kind, lst.name))
        if not 0 < lst.local_port < 65536:
            raise ProxyError(f"{what}: port {lst.local_port} out of range")
        if lst.local_port in seen_ports:
            raise ProxyError(f"{what}: port {lst.local_port} is also {seen_ports[lst.local_port]}")
        seen_ports[lst.local_port] = what
        if not _PASSWORD.fullmatch(lst.password):
            raise ProxyError(f"{what}: the password may hold only letters, digits, '-' and '_'")
        for s in lst.servers:
            if not _HOST.fullmatch(s.host) or not (0 < s.port < 65536 and 0 < s.check_port < 65536):
                raise ProxyError(f"{what}: bad server {s.host}:{s.port} (check {s.check_port})")


def _section(lst: ProxyListener, bind: str) -> list[str]:
    out = [f"listen {lst.kind}-{lst.name}", f"    bind {_addr(bind)}:{lst.local_port}"]
    if lst.kind == "postgres":
        out += ["    option httpchk GET /primary", "    http-check expect status 200"]
    else:
        # Words are unquoted: HAProxy turns \r\n into CR LF, '\ ' into a space.
        out += [
            "    option tcp-check",
            "    tcp-check connect",
            f"    tcp-check send AUTH\\ {lst.password}\\r\\n",
            "    tcp-check expect string +OK",
            "    tcp-check send PING\\r\\n",
            "    tcp-check expect string +PONG",
            "    tcp-check send info\\ replication\\r\\n",
            "    tcp-check expect string role:master",
            "    tcp-check send QUIT\\r\\n",
            "    tcp-check expect string +OK",
        ]
    out.append(
        f"    default-server inter {CHECK_INTER_MS} downinter {DOWN_INTER_MS} fall {FALL} "
        f"rise {RISE} on-marked-down shutdown-sessions"
    )
    for s in sorted(set(lst.servers)):
        out.append(
            f"    server {_server_name(s)} {_addr(s.host)}:{s.port} check port {s.check_port}"
        )
    return out


def _server_name(s: ProxyServer) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", f"{s.host}_{s.port}")


def render(listeners: Iterable[ProxyListener], bind: str, home: Path) -> str:
    """HAProxy's whole configuration for these listeners on `bind` (pure).

    `home`: where its stats socket (admin level: the adapter reads server
    states through it) and the server-state file kept across reloads are.
    A listener with no server still listens; HAProxy closes its connections.
    A server just added would count as up until its first check (HAProxy
    2.6 has no `init-state`); the adapter starts it down through the
    server-state file instead (`seed_state`).
    """
    socket_path, state_path = home / "haproxy.sock", home / "haproxy.state"
    wanted = sorted(listeners, key=lambda x: (x.kind, x.name))
    _check(wanted)
    lines = [
        "# Written by the Roost runner (roost.runner.dataproxy); rewritten on every change.",
        "global",
        # No maxconn: HAProxy derives it from the file limit it is given.
        f"    stats socket {socket_path} mode 600 level admin expose-fd listeners",
        f"    hard-stop-after {HARD_STOP_AFTER}",
        # A reload starts new workers with the servers' last known states (a
        # standby stays down) rather than all up until their first check.
        f"    server-state-file {state_path}",
        "",
        "defaults",
        "    mode tcp",
        "    timeout connect 3s",
        # Database sessions idle for long; the server's own timeouts govern.
        "    timeout client 1h",
        "    timeout server 1h",
        "    timeout check 2s",
        "    load-server-state-from-file global",
        "",
    ]
    for lst in wanted:
        lines += [*_section(lst, bind), ""]
    return "\n".join(lines)


# `show servers state`'s format (version 1), which HAProxy loads back.
_STATE_VERSION = "1"
_STATE_HEAD = (
    "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight "
    "srv_iweight srv_time_since_last_change srv_check_status srv_check_result "
    "srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id "
    "srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr srv_agent_addr "
    "srv_agent_port"
)


def seed_state(known: str, listeners: Iterable[ProxyListener]) -> str:
    """The server-state file HAProxy is (re)started with (pure): each
    server's state from `known` (`show servers state` of the workers running
    now, or "" on a first start), and every server not in it down.

    Why: HAProxy 2.6 counts a server with no state as up until its first
    check (and checks it about a second later at most), so a new listener
    would send its first connections round-robin, some to a standby that
    refuses writes or a Redis replica. Down, with no check passed yet
    (health 0, rise 1), a server is up as soon as its first check passes.
    Lines are matched by listener and server name (no forced ids); a line
    for a server no longer configured is dropped.
    """
    wanted: dict[tuple[str, str], ProxyServer] = {
        (f"{lst.kind}-{lst.name}", _server_name(s)): s for lst in listeners for s in lst.servers
    }
    lines = [_STATE_VERSION, _STATE_HEAD]
    seen: set[tuple[str, str]] = set()
    for line in known.splitlines():
        cols = line.split()
        if len(cols) < 5 or line.startswith("#"):
            continue
        key = (cols[1], cols[3])
        if key in wanted and key not in seen:
            seen.add(key)
            lines.append(" ".join(cols))
    for (backend, name), s in sorted(wanted.items()):
        if (backend, name) in seen:
            continue
        # op_state 0 (stopped), admin 0, weights 1, check status 1 (not yet
        # run), result 0 (unknown), health 0, check state 6 (configured and
        # enabled, as HAProxy writes it), no forced ids, no fqdn.
        lines.append(
            f"0 {backend} 0 {name} {s.host.strip('[]')} 0 0 1 1 0 1 0 0 6 0 0 0 - "
            f"{s.port} - 0 {s.check_port} - - {s.check_port}"
        )
    return "\n".join(lines) + "\n"


def servers_up(stat_csv: str) -> dict[str, list[str]]:
    """`show stat`'s CSV -> listener -> its servers that are UP (pure)."""
    lines = stat_csv.splitlines()
    if not lines or not lines[0].startswith("# "):
        return {}
    head = lines[0][2:].split(",")
    px, sv, status = head.index("pxname"), head.index("svname"), head.index("status")
    out: dict[str, list[str]] = {}
    for line in lines[1:]:
        cols = line.split(",")
        if len(cols) <= status or cols[sv] in ("FRONTEND", "BACKEND"):
            continue
        out.setdefault(cols[px], [])
        if cols[status].startswith("UP"):
            out[cols[px]].append(cols[sv])
    return out


# Where a runner reads the listeners it serves (DATA/dataproxy.json): a JSON
# list of {"kind", "name", "local_port", "servers": [[host, port,
# check_port], ...], "password"}, rewritten whole by whoever feeds it.
LISTENERS_FILE = "dataproxy.json"
FOLLOW_INTERVAL_S = 2.0


def decode_listeners(raw: bytes) -> list[ProxyListener]:
    """The listeners file's content (ProxyError when it is not one)."""
    try:
        items = json.loads(raw)
        if not isinstance(items, list):
            raise TypeError("not a list")
        return [
            ProxyListener(
                kind=i["kind"],
                name=str(i["name"]),
                local_port=int(i["local_port"]),
                servers=tuple(
                    ProxyServer(str(h), int(p), int(c)) for h, p, c in i.get("servers", [])
                ),
                password=str(i.get("password", "")),
            )
            for i in items
        ]
    except (ValueError, TypeError, KeyError) as exc:
        raise ProxyError(f"the listeners file is not a list of listeners: {exc}") from None


def encode_listeners(listeners: Iterable[ProxyListener]) -> bytes:
    return json.dumps(
        [
            {
                "kind": x.kind,
                "name": x.name,
                "local_port": x.local_port,
                "servers": [list(s) for s in x.servers],
                "password": x.password,
            }
            for x in listeners
        ],
        indent=1,
    ).encode()


class DataProxy:
    """HAProxy for this runner's listeners: adopted from a predecessor or
    started on the first `apply`, reloaded (SIGUSR2 to its master) on each
    change; stopped by `close`, left running for a successor by `leave`."""

    def __init__(self, home: Path, bind: str = "127.0.0.1", binary: str = HAPROXY) -> None:
        self.home = home
        self.bind = bind
        self.binary = binary
        self.config = home / "haproxy.cfg"
        self.pidfile = home / "haproxy.pid"
        self._proc: proxyproc.Master | None = None
        self._text = ""
        self._adopted = False

    @property
    def pid(self) -> int | None:
        """The master's pid while this proxy holds one."""
        return self._proc.pid if self._proc is not None else None

    def _adopt(self) -> None:
        """Take on the HAProxy a predecessor left serving (once): what it
        serves is the configuration file it was last given."""
        if self._adopted:
            return
        self._adopted = True
        found = proxyproc.find(self.pidfile, self.binary, self.config)
        if found is None:
            return
        try:
            self._text = self.config.read_text()
        except OSError:
            self._text = ""  # unknown: the next apply reloads it
        self._proc = found
        log.info("data proxy adopted (pid %d)", found.pid)

    async def _validate(self, path: Path) -> None:
        proc = await spawn.start(
            [self.binary, "-c", "-q", "-f", str(path)],
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
        if proc.returncode != 0:
            raise ProxyError(f"haproxy refused the configuration: {out.decode(errors='replace')}")

    async def apply(self, listeners: Iterable[ProxyListener]) -> bool:
        """Make HAProxy serve exactly these listeners; True if anything changed."""
        wanted = list(listeners)
        text = render(wanted, self.bind, self.home)
        self._adopt()
        running = self._proc is not None and self._proc.running
        if not wanted and not running and not self._text:
            return False  # nothing to serve, nothing served: no HAProxy (one machine)
        if text == self._text and running:
            return False
        self.home.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.config.with_name("haproxy.cfg.new")
        tmp.write_text(text)
        await self._validate(tmp)
        os.replace(tmp, self.config)
        self._text = text
        state = self.home / "haproxy.state"
        if running:
            assert self._proc is not None
            try:
                known = await self._ask("show servers state")
            except (OSError, TimeoutError):
                # The last states written, rather than every server down.
                known = state.read_text() if state.exists() else ""
            state.write_text(seed_state(known, wanted))
            self._proc.signal(signal.SIGUSR2)
            log.info("data proxy reloaded")
        else:
            if self._proc is not None:
                self._proc.close()  # it ended; a new one takes its place
            # A first start: nothing checked yet, so every server down; a
            # state file left by an HAProxy that ended is not trusted.
            state.write_text(seed_state("", wanted))
            try:
                self._proc = await proxyproc.launch(
                    self.binary, self.config, self.pidfile, self.home / "haproxy.log", self.home
                )
            except OSError as exc:
                self._proc = None
                raise ProxyError(f"the data proxy did not start: {exc}") from None
            log.info("data proxy started (pid %d)", self._proc.pid)
        return True

    async def _ask(self, command: str) -> str:
        """One command on the worker's stats socket; its whole answer."""
        r, w = await asyncio.wait_for(
            asyncio.open_unix_connection(str(self.home / "haproxy.sock")), 5
        )
        try:
            w.write(command.encode() + b"\n")
            await w.drain()
            return (await asyncio.wait_for(r.read(), 5)).decode()
        finally:
            w.close()

    async def up(self) -> dict[str, list[str]]:
        """Listener ("kind-name") -> the servers its checks call up now."""
        return servers_up(await self._ask("show stat"))

    async def close(self) -> None:
        """Stop HAProxy (a full stop of the runner), adopting it first if
        this proxy never did: nothing of a predecessor's is left serving."""
        self._adopt()
        if self._proc is not None:
            await self._proc.stop(STOP_GRACE_S)
            self._proc = None
            with contextlib.suppress(FileNotFoundError):
                self.pidfile.unlink()

    def leave(self) -> None:
        """Let HAProxy go on serving for the next runner (a hand-over)."""
        if self._proc is not None:
            self._proc.close()
            self._proc = None


# How long HAProxy's master may take to stop its workers on a full stop.
STOP_GRACE_S = 10.0


async def follow(
    path: Path,
    proxy: DataProxy,
    stop: asyncio.Event,
    interval: float = FOLLOW_INTERVAL_S,
    hand_over: Callable[[], bool] = lambda: False,
) -> None:
    """Serve the listeners `path` names, applying each change (a reload that
    drops no connection), until `stop` (or cancelled); then stop HAProxy,
    or leave it serving when `hand_over()` says the runner hands over. No
    file: nothing is served (one machine, or no pair yet). A file that
    cannot be used is logged and the listeners before it kept."""
    seen: bytes | None = None
    try:
        while not stop.is_set():
            try:
                raw = path.read_bytes()
            except FileNotFoundError:
                raw = b"[]"
            if raw != seen:
                seen = raw
                try:
                    await proxy.apply(decode_listeners(raw))
                except ProxyError as exc:
                    log.error("data proxy: %s: %s (keeping the listeners before)", path, exc)
                    if proxy.pid is None:
                        seen = None  # nothing serves: try again on the next round
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval):
                    await stop.wait()
    finally:
        if hand_over():
            proxy.leave()
        else:
            await proxy.close()
