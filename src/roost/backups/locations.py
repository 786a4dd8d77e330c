"""Where backupd keeps history: restic repository locations.

A location is a name ("local", "offsite"), a kind and the restic repository
string. "local" is DATA/backupd/repo; the offsite one comes from a setting
(ROOST_BACKUP_OFFSITE) and is checked here, so a typo is a clear error that
names the setting before anything is written.

SFTP: restic starts `ssh` itself; backupd tells it exactly how
(`-o sftp.command=...`): its own key (keys/id_ed25519), its own known_hosts
(keys/known_hosts) with strict checking, batch mode (never a prompt), no
agent, no config file, and timeouts so a dead link ends instead of hanging.

Host keys are pinned, never accepted silently. The operator says how in a
setting (`parse_host_key_pin`): the host's key itself ("ssh-ed25519 AAAA...")
or its SHA256 fingerprint (what `ssh-keygen -lf` prints); the key is then
recorded on first contact only if it matches. "tofu" (trust on first use)
records whatever the host offers the first time and checks it ever after: an
opt-in for operators who reach the host over a network they trust at set-up
time. Unset: refused, with the command that prints the fingerprint. A
fingerprint is the default advice because it is the one thing an operator can
read off the offsite host's console and compare, and a changed key stops every
copy (`HostKeyRefused`) instead of sending history to an impostor.

Errors: `LocationError` is bad configuration. A failing repository operation
raises a `RepoError`; `retryable` says whether trying again later can help.
`Unreachable` (retryable) is the network or the far host, never a damaged
repository, which `restic check` reports as problems.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import ipaddress
import os
import re
import signal
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from roost.backups.layout import Layout
from roost.proc import run as proc_run
from roost.proc.run import Completed

Kind = Literal["local", "sftp", "s3"]

# Tools get a fixed environment: nothing of the daemon's (which may hold
# secrets) leaks into them; TZ=UTC makes restic record snapshot times in UTC,
# the zone retention's day/week/month buckets are counted in.
BASE_ENV = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "TZ": "UTC"}

# The last this many characters of a tool's stderr go into error messages.
STDERR_TAIL = 4000


class LocationError(ValueError):
    """A location or host-key setting that cannot be used (names the setting)."""


class RepoError(Exception):
    """A repository operation failed; `stderr` is the tool's own account."""

    retryable = False

    def __init__(self, message: str, stderr: str = "") -> None:
        super().__init__(message + (f": {stderr.strip()[-STDERR_TAIL:]}" if stderr else ""))
        self.stderr = stderr


class Unreachable(RepoError):
    """The location cannot be reached now (network, far host down): try later."""

    retryable = True


class HostKeyRefused(RepoError):
    """The SFTP host's key is not pinned, or is not the pinned one."""


class AuthRefused(RepoError):
    """The SFTP host refused backupd's key (not authorised there)."""


@dataclass(frozen=True)
class Location:
    name: str
    kind: Kind
    repository: str  # what restic is given with -r
    path: str  # local: the directory; sftp: the path on the far host
    user: str = ""  # sftp only
    host: str = ""
    port: int = 22

    @property
    def local_dir(self) -> Path:
        if self.kind != "local":
            raise ValueError(f"location {self.name} is not local")
        return Path(self.path)

    def __str__(self) -> str:
        return f"{self.name} ({self.repository})"


def local_location(layout: Layout) -> Location:
    """The backup host's own repository, DATA/backupd/repo."""
    path = str(layout.local_repo)
    return Location(name="local", kind="local", repository=path, path=path)


_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")
_HOSTNAME = re.compile(
    r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
# No whitespace, quotes or backslashes: restic splits sftp.command on them,
# and a path is part of what the operator reads back in errors.
_SAFE_PATH = re.compile(r"[^\s\"'\\]+")


def parse_location(name: str, value: str, *, setting: str) -> Location:
    """The location a setting names: `sftp:USER@HOST:/PATH`,
    `sftp://USER@HOST:PORT//PATH`, `s3:...` or a local absolute path."""
    v = value.strip()
    if not v:
        raise LocationError(f"{setting} is empty: give a restic repository (sftp:... or s3:...)")
    if any(c in v for c in "\r\n\t\0"):
        raise LocationError(f"{setting}: control characters in {value!r}")
    if v.startswith("sftp://"):
        return _sftp_url(name, v, setting)
    if v.startswith("sftp:"):
        return _sftp_short(name, v, setting)
    if v.startswith("s3:"):
        if not _SAFE_PATH.fullmatch(v[3:]):
            raise LocationError(f"{setting}: {v!r} is not an S3 location (s3:HOST/BUCKET[/PREFIX])")
        return Location(name=name, kind="s3", repository=v, path=v[3:])
    if v.startswith("local:"):
        v = v[len("local:") :]
    if v.startswith("/"):
        if not _SAFE_PATH.fullmatch(v):
            raise LocationError(f"{setting}: no spaces or quotes in a repository path ({v!r})")
        return Location(name=name, kind="local", repository=v, path=v)
    kind = v.split(":", 1)[0] if ":" in v else ""
    raise LocationError(
        f"{setting}: {value!r} is not a location backupd supports"
        + (f" (kind {kind!r})" if kind else "")
        + ": use sftp:USER@HOST:/PATH, sftp://USER@HOST:PORT//PATH, s3:HOST/BUCKET or /PATH"
    )


def _sftp_short(name: str, v: str, setting: str) -> Location:
    m = re.fullmatch(r"sftp:(?:([^@]+)@)?(\[[^\]]+\]|[^:/\[\]]+):(.+)", v)
    if not m:
        raise LocationError(f"{setting}: {v!r} is not sftp:USER@HOST:/PATH")
    user, host, path = m.group(1) or "", m.group(2), m.group(3)
    return _sftp(name, v, user, host, 22, path, setting)


def _sftp_url(name: str, v: str, setting: str) -> Location:
    m = re.fullmatch(r"sftp://(?:([^@/]+)@)?(\[[^\]]+\]|[^:/\[\]]+)(?::(\d+))?/(.+)", v)
    if not m:
        raise LocationError(f"{setting}: {v!r} is not sftp://USER@HOST[:PORT]//PATH")
    user, host, port, path = m.group(1) or "", m.group(2), m.group(3), m.group(4)
    return _sftp(name, v, user, host, int(port) if port else 22, path, setting)


def _sftp(name: str, v: str, user: str, host: str, port: int, path: str, setting: str) -> Location:
    if not user:
        raise LocationError(f"{setting}: {v!r} names no user (sftp:USER@HOST:/PATH)")
    if not _USER.fullmatch(user):
        raise LocationError(f"{setting}: {user!r} is not a user name")
    if host.startswith("["):
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise LocationError(f"{setting}: {host!r} is not an IPv6 address") from None
    elif not _HOSTNAME.fullmatch(host):
        raise LocationError(f"{setting}: {host!r} is not a host name or address")
    if not 1 <= port <= 65535:
        raise LocationError(f"{setting}: port {port} is out of range")
    if not _SAFE_PATH.fullmatch(path):
        raise LocationError(f"{setting}: no spaces or quotes in the path ({path!r})")
    return Location(
        name=name, kind="sftp", repository=v, path=path, user=user, host=host, port=port
    )


# ---------------------------------------------------------------- how restic reaches it


def ssh_argv(loc: Location, layout: Layout) -> list[str]:
    """The ssh command for `loc`: backupd's key and pins only, never a prompt."""
    for p in (layout.ssh_key, layout.known_hosts):
        if not _SAFE_PATH.fullmatch(str(p)):
            raise LocationError(f"SFTP locations need a data directory path without spaces ({p})")
    return [
        "ssh",
        "-F", "none",  # no ~/.ssh/config or /etc/ssh/ssh_config: only what is here
        "-i", str(layout.ssh_key),
        "-o", "IdentitiesOnly=yes",
        "-o", "IdentityAgent=none",
        "-o", f"UserKnownHostsFile={layout.known_hosts}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", "StrictHostKeyChecking=yes",
        "-o", "UpdateHostKeys=no",
        "-o", "BatchMode=yes",
        "-o", "PasswordAuthentication=no",
        "-o", "ConnectTimeout=15",
        "-o", "ServerAliveInterval=15",
        "-o", "ServerAliveCountMax=4",
        "-p", str(loc.port),
        f"{loc.user}@{loc.host.strip('[]')}",
        "-s", "sftp",
    ]  # fmt: skip


def restic_options(loc: Location, layout: Layout) -> list[str]:
    """Extra restic arguments for `loc` (the sftp command for SFTP)."""
    if loc.kind != "sftp":
        return []
    return ["-o", "sftp.command=" + " ".join(ssh_argv(loc, layout))]


def restic_env(loc: Location, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment entries `loc` needs from the daemon's (AWS_* for S3)."""
    if loc.kind != "s3":
        return {}
    aws = {k: v for k, v in environ.items() if k.startswith("AWS_")}
    if ("AWS_ACCESS_KEY_ID" in aws) != ("AWS_SECRET_ACCESS_KEY" in aws):
        raise LocationError(
            f"location {loc.name}: set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or neither"
        )
    return aws


# ---------------------------------------------------------------- tools


async def run_tool(
    argv: Sequence[str],
    *,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    stop_signal: int = signal.SIGTERM,
) -> Completed:
    """Run a tool to completion with the fixed environment; TimeoutError after
    `timeout` (the tool is stopped with `stop_signal`, given 10 s, then killed:
    SIGINT lets restic remove its lock before it goes)."""
    return await proc_run.run_tool(
        argv, timeout=timeout, env={**BASE_ENV, **(env or {})}, cwd=cwd,
        stop_signal=stop_signal, grace_s=10.0,
    )  # fmt: skip


def ssh_failure(loc: Location, stderr: str) -> RepoError:
    """The error an ssh that failed with `stderr` means (pure)."""
    if re.search(
        r"Host key verification failed|IDENTIFICATION HAS CHANGED|host key is known", stderr
    ):
        return HostKeyRefused(f"{loc}: the SFTP host's key is not the pinned one", stderr)
    if "Permission denied" in stderr:
        return AuthRefused(
            f"{loc}: the SFTP host refused backupd's key (authorise keys/id_ed25519.pub there)",
            stderr,
        )
    return Unreachable(f"{loc} is unreachable", stderr)


async def probe_sftp(loc: Location, layout: Layout, *, timeout: float = 30.0) -> RepoError | None:
    """Open an SFTP session the way restic does and end it at once: None when
    that works, else the error that says why (restic's own report of a failed
    ssh is often just "EOF")."""
    try:
        done = await run_tool(ssh_argv(loc, layout), timeout=timeout)
    except TimeoutError:
        return Unreachable(f"{loc}: no SFTP session within {timeout:.0f}s")
    return None if done.returncode == 0 else ssh_failure(loc, done.stderr)


# ---------------------------------------------------------------- backupd's SSH key


async def ensure_ssh_key(layout: Layout, *, timeout: float = 30.0) -> str:
    """backupd's SSH key (made once, 0600); returns the public key line the
    operator authorises on the offsite host."""
    key, pub = layout.ssh_key, layout.ssh_key.with_name(layout.ssh_key.name + ".pub")
    layout.keys.mkdir(parents=True, exist_ok=True)
    layout.keys.chmod(0o700)
    if not key.exists():
        argv = ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)]
        done = await run_tool(
            [*argv, "-C", f"roost-backupd@{socket.gethostname()}"], timeout=timeout
        )
        if done.returncode != 0:
            raise RepoError("ssh-keygen failed", done.stderr)
    key.chmod(0o600)
    if not pub.exists():
        done = await run_tool(["ssh-keygen", "-y", "-f", str(key)], timeout=timeout)
        if done.returncode != 0:
            raise RepoError(f"ssh-keygen could not read {key}", done.stderr)
        pub.write_bytes(done.stdout)
    return pub.read_text().strip()


# ---------------------------------------------------------------- host key pinning


@dataclass(frozen=True)
class HostKeyPin:
    mode: Literal["key", "fingerprint", "tofu"]
    value: str = ""  # "TYPE BASE64" for a key, "SHA256:..." for a fingerprint


_KEY_TYPES = ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
              "ecdsa-sha2-nistp521", "ssh-rsa")  # fmt: skip


def parse_host_key_pin(value: str, *, setting: str) -> HostKeyPin | None:
    """A pin from a setting: "" (none), "tofu", "SHA256:..." or "TYPE BASE64"
    (a known_hosts or .pub line; a leading host name and a comment are dropped)."""
    v = value.strip()
    if not v:
        return None
    if v == "tofu":
        return HostKeyPin("tofu")
    if v.startswith("SHA256:"):
        if not re.fullmatch(r"SHA256:[A-Za-z0-9+/]{43}=?", v):
            raise LocationError(f"{setting}: {v!r} is not a SHA256 fingerprint")
        return HostKeyPin("fingerprint", v.rstrip("="))
    words = v.split()
    for i, w in enumerate(words[:-1]):
        if w in _KEY_TYPES:
            if _key_blob(words[i + 1]) is None:
                break
            return HostKeyPin("key", f"{w} {words[i + 1]}")
    raise LocationError(
        f"{setting}: give the offsite host's key ('ssh-ed25519 AAAA...'), its fingerprint "
        "('SHA256:...', from `ssh-keyscan HOST | ssh-keygen -lf -`) or 'tofu'"
    )


def _key_blob(b64: str) -> bytes | None:
    try:
        return base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError):
        return None


def fingerprint(key_b64: str) -> str:
    """OpenSSH's SHA256 fingerprint of a base64 public key blob."""
    blob = _key_blob(key_b64)
    if blob is None:
        raise ValueError("not a base64 key")
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def known_hosts_name(loc: Location) -> str:
    host = loc.host.strip("[]")
    return host if loc.port == 22 else f"[{host}]:{loc.port}"


def known_keys(text: str, name: str) -> list[tuple[str, str]]:
    """(type, base64) of the plain (unhashed) known_hosts entries for `name`."""
    found = []
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 3 and not line.startswith(("#", "@")) and name in words[0].split(","):
            found.append((words[1], words[2]))
    return found


def _matches(pin: HostKeyPin, key: tuple[str, str]) -> bool:
    if pin.mode == "key":
        return pin.value == f"{key[0]} {key[1]}"
    if pin.mode == "fingerprint":
        return fingerprint(key[1]) == pin.value
    return True


async def pin_host_key(
    loc: Location, layout: Layout, pin: HostKeyPin | None, *, setting: str, timeout: float = 30.0
) -> str:
    """Make keys/known_hosts hold `loc`'s host key as `pin` says (see the
    module doc); returns its fingerprint. A recorded key is never replaced: a
    host that changed its key is refused until the operator removes the line."""
    name = known_hosts_name(loc)
    text = layout.known_hosts.read_text() if layout.known_hosts.exists() else ""
    recorded = known_keys(text, name)
    if recorded:
        good = [k for k in recorded if pin is None or _matches(pin, k)]
        if not good:
            raise HostKeyRefused(
                f"{loc}: {layout.known_hosts} pins {fingerprint(recorded[0][1])} for {name}, "
                f"but {setting} says {pin.value if pin else ''}"
            )
        return fingerprint(good[0][1])
    if pin is None:
        raise HostKeyRefused(
            f"{loc}: no host key pinned for {name}; set {setting} to its fingerprint "
            f"(on a machine you trust: ssh-keyscan -p {loc.port} {loc.host.strip('[]')} | "
            "ssh-keygen -lf -) or to 'tofu' to trust the first key it offers"
        )
    if pin.mode == "key":
        kind, b64 = pin.value.split()
        offered = [(kind, b64)]
    else:
        offered = [k for k in await _keyscan(loc, timeout) if _matches(pin, k)]
        if not offered:
            raise HostKeyRefused(f"{loc}: {name} offers no key with fingerprint {pin.value}")
    lines = "".join(f"{name} {k} {b}\n" for k, b in offered)
    _write_private(
        layout.known_hosts, text + ("" if not text or text.endswith("\n") else "\n") + lines
    )
    return fingerprint(offered[0][1])


async def _keyscan(loc: Location, timeout: float) -> list[tuple[str, str]]:
    host = loc.host.strip("[]")
    try:
        done = await run_tool(
            ["ssh-keyscan", "-T", str(int(timeout)), "-p", str(loc.port), host], timeout=timeout + 5
        )
    except TimeoutError:
        raise Unreachable(f"{loc}: ssh-keyscan got no answer in {timeout:.0f}s") from None
    keys = known_keys(done.stdout.decode(errors="replace"), known_hosts_name(loc))
    if not keys:
        raise Unreachable(f"{loc}: ssh-keyscan got no host key", done.stderr)
    return keys


def _write_private(path: Path, text: str) -> None:
    """Replace `path` with `text`, 0600, atomically (no half-written pins)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()  # a leftover could have another mode
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
