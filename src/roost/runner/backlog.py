"""How many connections wait in a listening socket's accept queue.

Before the runner tells a web instance to stop, it waits for the instance's
listeners to have no connection waiting to be accepted (`Supervisor._stop`).
gunicorn's workers stop accepting at TERM and the listening socket closes
with the last of them, so a request a router handed over just before the
instance left the route table, still queued because every worker was busy,
would be reset unanswered; a POST cannot be retried on another instance
once sent. Waiting until the queue is empty lets the workers take every such
request first.

Two sources, both the kernel's own count, read without a subprocess:
- a unix stream listener (the routers' way in on the runner's own host):
  sock_diag over netlink (`UNIX_DIAG_RQLEN`: for a listener, the number of
  connections in its queue);
- a TCP listener: /proc/net/tcp and tcp6, whose `rx_queue` column is the
  accept queue's length for a socket in LISTEN state.

Both list sockets of the reader's network namespace, the instances' too
(their sandboxes share it). A listener not found (the instance closed it
already) counts as an empty queue.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterable
from pathlib import Path

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
TCP_LISTEN = 10
UDIAG_SHOW_NAME, UDIAG_SHOW_RQLEN = 0x01, 0x10
UNIX_DIAG_NAME, UNIX_DIAG_RQLEN = 0, 4

_NLMSGHDR = struct.Struct("=IHHII")
_UNIX_DIAG_REQ = struct.Struct("=BBHIIIII")
_UNIX_DIAG_MSG = struct.Struct("=BBBBIII")
_RTATTR = struct.Struct("=HH")


def _align(n: int) -> int:
    return (n + 3) & ~3


def unix_request(seq: int = 1) -> bytes:
    """A dump request for every unix listener, with its path and queue length."""
    body = _UNIX_DIAG_REQ.pack(
        socket.AF_UNIX, 0, 0, 1 << TCP_LISTEN, 0, UDIAG_SHOW_NAME | UDIAG_SHOW_RQLEN, 0, 0
    )
    header = _NLMSGHDR.pack(
        _NLMSGHDR.size + len(body), SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, seq, 0
    )
    return header + body


class DiagError(OSError):
    pass


def parse_unix_dump(data: bytes) -> tuple[dict[str, int], bool]:
    """The (path -> queued connections) a batch of netlink replies names, and
    whether it held the dump's end. Abstract and unnamed sockets are left out."""
    found: dict[str, int] = {}
    offset = 0
    while offset + _NLMSGHDR.size <= len(data):
        length, kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(data, offset)
        if length < _NLMSGHDR.size or offset + length > len(data):
            raise DiagError("a truncated netlink message")
        if kind == NLMSG_DONE:
            return found, True
        if kind == NLMSG_ERROR:
            (errno,) = struct.unpack_from("=i", data, offset + _NLMSGHDR.size)
            raise DiagError(-errno, os.strerror(-errno))
        if kind == SOCK_DIAG_BY_FAMILY:
            path, queued = _unix_attrs(
                data[offset + _NLMSGHDR.size + _UNIX_DIAG_MSG.size : offset + length]
            )
            if path and queued is not None:
                found[path] = queued
        offset += _align(length)
    return found, False


def _unix_attrs(attrs: bytes) -> tuple[str, int | None]:
    path, queued = "", None
    offset = 0
    while offset + _RTATTR.size <= len(attrs):
        length, kind = _RTATTR.unpack_from(attrs, offset)
        if length < _RTATTR.size:
            break
        value = attrs[offset + _RTATTR.size : offset + length]
        if kind == UNIX_DIAG_NAME and value[:1] not in (b"", b"\0"):
            path = value.rstrip(b"\0").decode(errors="surrogateescape")
        elif kind == UNIX_DIAG_RQLEN and len(value) >= 4:
            (queued,) = struct.unpack_from("=I", value)
        offset += _align(length)
    return path, queued


def unix_backlogs() -> dict[str, int]:
    """Every unix stream listener of this network namespace: path -> queued."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_SOCK_DIAG) as s:
        s.settimeout(2.0)
        s.sendto(unix_request(), (0, 0))
        found: dict[str, int] = {}
        while True:
            batch, done = parse_unix_dump(s.recv(1 << 16))
            found.update(batch)
            if done:
                return found


def parse_proc_net_tcp(text: str, port: int) -> int | None:
    """The accept queue of the listener on `port` in a /proc/net/tcp{,6}
    table (the sum, should several sockets listen on it), None if none does."""
    total: int | None = None
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 5 or fields[3] != "0A":
            continue
        local = fields[1].rsplit(":", 1)
        if len(local) != 2 or int(local[1], 16) != port:
            continue
        rx_queue = int(fields[4].split(":", 1)[1], 16)
        total = (total or 0) + rx_queue
    return total


def tcp_backlog(port: int, proc_net: Path = Path("/proc/net")) -> int | None:
    total: int | None = None
    for name in ("tcp", "tcp6"):
        try:
            text = (proc_net / name).read_text()
        except OSError:
            continue
        queued = parse_proc_net_tcp(text, port)
        if queued is not None:
            total = (total or 0) + queued
    return total


def queued(unix_paths: Iterable[str], ports: Iterable[int]) -> int:
    """Connections waiting on any of these listeners (0 for those not found)."""
    paths = [p for p in unix_paths if p]
    total = 0
    if paths:
        listeners = unix_backlogs()
        total += sum(listeners.get(p, 0) for p in paths)
    for port in ports:
        if port:
            total += tcp_backlog(port) or 0
    return total
