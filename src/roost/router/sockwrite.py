"""Writes that skip the event loop's write path while it has nothing queued.

uvloop's `transport.write` costs a request more user time than the send
itself: the bytes appended to a list, asked for their length, the list
cleared by a method call, the GIL released and taken around the syscall,
flow control asked twice (measured: a fifth of the router's user time for
the two writes a plain request makes). When nothing of the connection's
waits in the transport, that path ends in one non-blocking send on the
socket anyway; `put` makes that send itself and hands the transport only
what the socket did not take. Bytes never overtake one another: a direct
send is tried only while the transport's buffer is known empty (the caller
keeps `queued`: whether anything went through the transport since it was
last seen empty), and only on a transport that is not closing (after
close() the descriptor may already belong to another connection). Errors
are the transport's: a send that fails (reset, broken pipe, EAGAIN) hands
all the bytes to `transport.write`, which meets the same error and handles
it as it always did.

Only plain stream transports qualify (`stream_fd`): uvloop's TCP and Unix
transports and asyncio's selector socket transport. A TLS transport wraps a
socket whose bytes must be encrypted first: -1, always the transport.
"""

from __future__ import annotations

import asyncio.selector_events
import os
import socket
from typing import Any

try:
    import cython
except ImportError:  # (Cython is a build tool: the router runs as plain Python without it)
    from types import SimpleNamespace

    cython = SimpleNamespace(compiled=False)

if cython.compiled:  # (C functions for `send`; compiled code only)
    from cython.cimports.cpython.bytes import PyBytes_AS_STRING, PyBytes_GET_SIZE
    from cython.cimports.roost.router.sysocket import send as c_send


def _plain_types() -> tuple[type, ...]:
    # (names neither module's stubs declare: the exact classes, so that a TLS
    # transport, or one a future version adds, never qualifies by accident)
    kinds: list[type] = [asyncio.selector_events._SelectorSocketTransport]  # type: ignore[attr-defined]
    try:
        import uvloop.loop
    except ImportError:
        pass
    else:
        kinds += [uvloop.loop.TCPTransport, uvloop.loop.UnixTransport]  # type: ignore[attr-defined]
    return tuple(kinds)


_PLAIN = _plain_types()
# Never block, and a peer gone is an error to hand over, not a SIGPIPE (a C
# integer when compiled: sockwrite.pxd).
_FLAGS = socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL


def stream_fd(transport: Any) -> int:
    """The socket under a plain stream transport, or -1 (TLS, anything else:
    then every write goes through the transport)."""
    if type(transport) not in _PLAIN:
        return -1
    sock = transport.get_extra_info("socket")
    if sock is None:
        return -1
    fd = sock.fileno()
    # (a blocking socket would stall the loop: never, but not worth trusting)
    return fd if fd >= 0 and not os.get_blocking(fd) else -1


def send(fd: int, data: bytes) -> int:
    """Bytes one non-blocking send took; 0 when it took none or failed (the
    transport then meets the error itself). Compiled, a send(2) without
    releasing the GIL (it does not block)."""
    if cython.compiled:
        n = c_send(fd, PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data), _FLAGS)
        return n if n > 0 else 0
    else:  # (an else, not a fall-through: Cython warns of unreachable code)
        try:
            return os.write(fd, data)
        except OSError:
            return 0


def put(transport: Any, is_closing: Any, fd: int, queued: bool, data: bytes) -> bool:
    """Write `data` on the connection: straight to socket `fd` while the
    transport holds none of its bytes (`queued` false, or its buffer found
    empty) and is not closing (`is_closing`: its method, bound once per
    connection rather than looked up by name per write), else, and for what
    the socket did not take, through the transport. Returns the new
    `queued`: whether the transport got bytes."""
    if fd >= 0 and type(data) is bytes:
        if queued and transport.get_write_buffer_size():
            transport.write(data)
            return True
        if not is_closing():
            n = send(fd, data)
            if n == len(data):
                return False
            if n:
                data = data[n:]
    transport.write(data)
    return True
