"""Every way out a hostile tenant tries, from wherever it runs.

`python probe.py MODE` prints one line, `PROBES MODE {json}`, mapping each
attempt to "blocked" or "LEAKED: how". targets.json (written by the test
next to this file before the deploy) names what to attack: the platform's
secret files, another app's files, ports that only routers or the platform
may use.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

HERE = Path(__file__).resolve().parent


def read(path: str) -> str:
    try:
        with open(path, "rb") as fh:
            fh.read(16)
    except OSError as exc:
        return f"blocked ({exc.strerror})"
    return f"LEAKED: read {path}"


def listing(path: str) -> str:
    try:
        names = os.listdir(path)
    except OSError as exc:
        return f"blocked ({exc.strerror})"
    return f"LEAKED: listed {len(names)} entries of {path}" if names else "blocked (empty)"


def write(path: str) -> str:
    try:
        probe = Path(path) / f"hostile-{os.getpid()}"
        probe.write_text("x")
        probe.unlink()
    except OSError as exc:
        return f"blocked ({exc.strerror})"
    return f"LEAKED: wrote into {path}"


def connect(host: str, port: int) -> str:
    try:
        with socket.create_connection((host, port), timeout=3):
            pass
    except OSError as exc:
        return f"blocked ({exc.strerror or exc})"
    return f"LEAKED: connected to {host}:{port}"


def redis_ping(host: str, port: int) -> str:
    """Another app's Redis, without its password: even a PONG is too much."""
    try:
        with socket.create_connection((host, port), timeout=3) as s:
            s.sendall(b"PING\r\n")
            reply = s.recv(64)
    except OSError as exc:
        return f"blocked ({exc.strerror or exc})"
    if reply.startswith(b"+PONG"):
        return f"LEAKED: {host}:{port} answered PING"
    return f"blocked ({reply[:24]!r})"


def pg_login(host: str, port: int, database: str) -> str:
    """Another app's database, as this app's own role: the server must say no
    before it even asks for a password."""
    own = urlparse(os.environ.get("DATABASE_URL", ""))
    if not own.username:
        return "blocked (no database credentials here)"
    params = b"".join(
        k.encode() + b"\0" + v.encode() + b"\0"
        for k, v in (("user", own.username), ("database", database))
    )
    body = struct.pack("!i", 196608) + params + b"\0"
    try:
        with socket.create_connection((host, port), timeout=3) as s:
            s.sendall(struct.pack("!i", len(body) + 4) + body)
            reply = s.recv(256)
    except OSError as exc:
        return f"blocked ({exc.strerror or exc})"
    if reply[:1] == b"R":
        return f"LEAKED: the server would authenticate {own.username} for {database}"
    return f"blocked ({reply[:60]!r})"


def platform_processes() -> str:
    """The platform's daemons (`python -m roost ...`) or another app's processes."""
    seen = []
    mine = os.getuid()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmd = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
                uid = os.stat(f"/proc/{entry}").st_uid
            except OSError:
                continue
            daemon = b"-m" in cmd and b"roost" in cmd
            other_tenant = uid not in (0, mine)
            if daemon or other_tenant:
                seen.append(b" ".join(cmd).decode(errors="replace")[:80])
    return f"LEAKED: sees {seen[:3]}" if seen else "blocked"


def identity(platform_uid: int) -> str:
    uid = os.getuid()
    if uid in (0, platform_uid) or os.geteuid() == 0:
        return f"LEAKED: runs as uid {uid}"
    if os.getgroups():
        return f"LEAKED: supplementary groups {os.getgroups()}"
    return "blocked"


def setuid_binary() -> str:
    """The upload carries a copy of `id` with its setuid bit set."""
    path = HERE / "suid-id"
    if not path.exists():
        return "blocked (no such file)"
    out = subprocess.run([str(path), "-u"], capture_output=True, text=True, check=False)
    if out.stdout.strip() == "0":
        return "LEAKED: a setuid file in the image ran as root"
    return "blocked"


def main(mode: str) -> None:
    targets = json.loads((HERE / "targets.json").read_text())
    results: dict[str, str] = {"identity": identity(targets["platform_uid"])}
    for path in targets["files"]:
        results[f"read {path}"] = read(path)
    for path in targets["dirs"]:
        results[f"list {path}"] = listing(path)
    for path in targets.get("writable_by_nobody", []):
        results[f"write {path}"] = write(path)
    for name, (host, port) in targets["ports"].items():
        results[f"connect {name}"] = connect(host, port)
    for name, (host, port) in targets.get("redis", {}).items():
        results[f"redis {name}"] = redis_ping(host, port)
    for name, (host, port, database) in targets.get("databases", {}).items():
        results[f"database {name}"] = pg_login(host, port, database)
    results["platform processes"] = platform_processes()
    results["setuid"] = setuid_binary()
    print("PROBES", mode, json.dumps(results, sort_keys=True), flush=True)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "manual")
