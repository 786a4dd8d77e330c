# cython: wraparound=False
# (no index here is negative: bytes are indexed in C without the check)
"""Plain request and response heads recognised without httptools.

Most of what a router sees is plain: a GET or HEAD with ordinary headers,
alone in its read; a response with one Content-Length whose whole body came
in the same read. Handing those to httptools costs a Python callback per
parser event and a few more calls to ask what it found; compiled (scan.pxd),
these scanners read the bytes once in C instead.

They accept only a conservative subset that llhttp parses the same way
(token bytes in names, printable ASCII in values, CRLF line ends, no header
llhttp or the router treats specially: framing, Connection, Upgrade,
hop-by-hop), and answer "not plain" for anything else, which then goes to
httptools as before: its errors and its meaning stay the authority.
"""

from __future__ import annotations

from roost.router.h1 import FORWARDED, HOP_BY_HOP

try:
    import cython
except ImportError:  # (Cython is a build tool: the router runs as plain Python without it)
    from types import SimpleNamespace

    cython = SimpleNamespace(compiled=False)

if cython.compiled:  # (C functions for `cut`; compiled code only)
    from cython.cimports.cpython.bytes import PyBytes_AS_STRING, PyBytes_FromStringAndSize
    from cython.cimports.libc.string import memcmp, memcpy

# Byte classes, one flag per byte value (indexable at C speed when compiled).
_TOKEN = bytes(
    1 if (chr(c).isascii() and chr(c).isalnum()) or chr(c) in "!#$%&'*+-.^_`|~" else 0
    for c in range(256)
)
# Printable ASCII, space and tab: what a value may hold here.
_VALUE = bytes(1 if c == 9 or 0x20 <= c <= 0x7E else 0 for c in range(256))
# An origin-form target: unreserved, sub-delims, ":@/?%" (no "#", no quotes or
# braces: those go to llhttp).
_TARGET = bytes(
    1 if (chr(c).isascii() and chr(c).isalnum()) or chr(c) in "-._~!$&'()*+,;=:@/?%" else 0
    for c in range(256)
)

# Request header names that keep a request off the plain path (lowercase):
# framing and connection headers llhttp acts on, and those the router drops.
_NOT_PLAIN = frozenset(
    HOP_BY_HOP
    | FORWARDED
    | {b"content-length", b"transfer-encoding", b"connection", b"upgrade", b"proxy-connection"}
)
# Raw names as seen -> whether they are plain (their case varies by client; bounded).
_NAMES: dict[bytes, bool] = {}

_HTTP11 = b" HTTP/1.1\r\n"


def request_head(data: bytes, headers: list[bytes], max_headers: int) -> int:
    """Where the target ends in `data` if it is exactly one plain request head
    and nothing more (GET or HEAD, origin-form target, HTTP/1.1, at most
    `max_headers` headers, none in `_NOT_PLAIN`), with its headers appended to
    `headers` (flat: name, value...); else 0 (and `headers` is to be dropped).
    The method is data[:target_start - 1]: 3 bytes for GET, 4 for HEAD."""
    n = len(data)
    if n < 18 or data[n - 1] != 10 or data[n - 2] != 13 or data[n - 3] != 10 or data[n - 4] != 13:
        return 0
    if data.startswith(b"GET /"):
        k = 4
    elif data.startswith(b"HEAD /"):
        k = 5
    else:
        return 0
    target = _TARGET
    while target[data[k]]:
        k += 1
    url_end = k
    if not data.startswith(_HTTP11, k):
        return 0
    k += 11
    token = _TOKEN
    value = _VALUE
    names = _NAMES
    count = 0
    while True:
        if data[k] == 13:  # the blank line: it must be the end of the read
            return url_end if k == n - 2 else 0
        s = k
        while token[data[k]]:
            k += 1
        if k == s or data[k] != 58:  # ":"
            return 0
        name = data[s:k]
        plain = names.get(name)
        if plain is None:
            plain = name.lower() not in _NOT_PLAIN
            if len(names) > 4096:
                names.clear()  # clients may invent any names
            names[name] = plain
        if not plain:
            return 0
        k += 1
        while data[k] == 32 or data[k] == 9:
            k += 1
        v = k
        while value[data[k]]:
            k += 1
        # (every line ends in CRLF; trailing blanks are llhttp's to judge)
        if data[k] != 13 or data[k + 1] != 10 or data[k - 1] == 32 or data[k - 1] == 9:
            return 0
        count += 1
        if count > max_headers:
            return 0
        headers.append(name)
        headers.append(data[v:k])
        k += 2


# Request header kinds the lane (client.py's plain lane) acts on, by raw name.
_OTHER, _HOST, _AGENT, _REFERER = 0, 1, 2, 3
_LANE_NAMES: dict[bytes, int] = {}
_LANE_SPECIAL = {b"host": _HOST, b"user-agent": _AGENT, b"referer": _REFERER}
# (x-request-id: the router keeps a valid one instead of making its own, which
# the general path decides)
_NOT_LANE = _NOT_PLAIN | {b"x-request-id"}


def _lane_kind(name: bytes) -> int:
    kind = -1 if name.lower() in _NOT_LANE else _LANE_SPECIAL.get(name.lower(), _OTHER)
    if len(_LANE_NAMES) > 4096:
        _LANE_NAMES.clear()  # clients may invent any names
    _LANE_NAMES[name] = kind
    return kind


def lane_request(data: bytes, max_headers: int) -> tuple[int, int, int, int, int, int, int]:
    """A plain request head (as `request_head` reads them) whose forwarded head
    is the read itself less its blank line, plus the router's own headers:
    every header written `Name: value` (one space, a value), exactly one Host,
    no X-Request-Id. Then (end of target, start and end of the Host value,
    of the last User-Agent value, of the last Referer value: 0, 0 when absent),
    all offsets in `data`; else all zero. Compiled, the only objects it makes
    are the header names it slices to look their kinds up."""
    n = len(data)
    if n < 18 or data[n - 1] != 10 or data[n - 2] != 13 or data[n - 3] != 10 or data[n - 4] != 13:
        return 0, 0, 0, 0, 0, 0, 0
    if data.startswith(b"GET /"):
        k = 4
    elif data.startswith(b"HEAD /"):
        k = 5
    else:
        return 0, 0, 0, 0, 0, 0, 0
    target = _TARGET
    while target[data[k]]:
        k += 1
    url_end = k
    if not data.startswith(_HTTP11, k):
        return 0, 0, 0, 0, 0, 0, 0
    k += 11
    token = _TOKEN
    value = _VALUE
    names = _LANE_NAMES
    count = 0
    hosts = 0
    hs = he = as_ = ae = rs = re_ = 0
    while True:
        if data[k] == 13:  # the blank line: it must be the end of the read
            if k != n - 2 or hosts != 1:
                return 0, 0, 0, 0, 0, 0, 0
            return url_end, hs, he, as_, ae, rs, re_
        s = k
        while token[data[k]]:
            k += 1
        # "Name: v": one space after the colon, then a value not starting blank
        if k == s or data[k] != 58 or data[k + 1] != 32:
            return 0, 0, 0, 0, 0, 0, 0
        # The headers the lane reads are told apart in place; others by
        # their raw name (a slice and a probe, cached by name).
        size = k - s
        c = data[s] | 32
        if c == 104 and size == 4 and _is(data, s, b"host"):  # "h"
            kind = _HOST
        elif c == 117 and size == 10 and _is(data, s, b"user-agent"):  # "u"
            kind = _AGENT
        elif c == 114 and size == 7 and _is(data, s, b"referer"):  # "r"
            kind = _REFERER
        else:
            name = sub(data, s, k)
            kind = names.get(name, -2)
            if kind == -2:
                kind = _lane_kind(name)
            if kind < 0:
                return 0, 0, 0, 0, 0, 0, 0
        k += 2
        v = k
        while value[data[k]]:
            k += 1
        if (
            k == v
            or data[v] == 9
            or data[v] == 32
            or data[k] != 13
            or data[k + 1] != 10
            or data[k - 1] == 32
            or data[k - 1] == 9
        ):
            return 0, 0, 0, 0, 0, 0, 0
        count += 1
        if count > max_headers:
            return 0, 0, 0, 0, 0, 0, 0
        if kind == _HOST:
            hosts += 1
            hs = v
            he = k
        elif kind == _AGENT:
            as_ = v
            ae = k
        elif kind == _REFERER:
            rs = v
            re_ = k
        k += 2


def response_head(data: bytes) -> tuple[int, int]:
    """(end of head, status) if `data` is exactly one plain response (see
    `plain_response`); else (0, 0)."""
    end, code, _, _ = plain_response(data)
    return end, code


def plain_response(data: bytes) -> tuple[int, int, int, int]:
    """(end of head, status, cut start, cut stop) if `data` is exactly one
    plain response: HTTP/1.1, a final status with a body (not 1xx, 204 or
    304), exactly one Content-Length, the body all there and nothing after it,
    no Transfer-Encoding, Upgrade or Keep-Alive header, and at most one
    Connection header, `keep-alive` (so the connection stays reusable); else
    all zero. data[cut start:cut stop] is that Connection line with the CRLF
    before it, what the router cuts (upstream.py), or empty (0, 0) when there
    is none: found in the same pass, where cutting needed a second one."""
    n = len(data)
    if n < 17 or not data.startswith(b"HTTP/1.1 "):
        return 0, 0, 0, 0
    code = 0
    for k in range(9, 12):
        c = data[k]
        if c < 48 or c > 57:
            return 0, 0, 0, 0
        code = code * 10 + c - 48
    if code < 200 or code > 599 or code == 204 or code == 304 or data[12] != 32:
        return 0, 0, 0, 0
    token = _TOKEN
    value = _VALUE
    k = 13
    while k < n and value[data[k]]:
        k += 1
    if k + 1 >= n or data[k] != 13 or data[k + 1] != 10:
        return 0, 0, 0, 0
    k += 2
    length = -1
    cut = stop = 0
    while True:
        if k + 1 >= n:
            return 0, 0, 0, 0  # the head is not complete in this read
        if data[k] == 13:
            if data[k + 1] != 10:
                return 0, 0, 0, 0
            end = k + 2
            if length < 0 or n - end != length:
                return 0, 0, 0, 0
            return end, code, cut, stop
        s = k
        while k < n and token[data[k]]:
            k += 1
        if k == s or k >= n or data[k] != 58:
            return 0, 0, 0, 0
        e = k
        k += 1
        while k < n and (data[k] == 32 or data[k] == 9):
            k += 1
        v = k
        while k < n and value[data[k]]:
            k += 1
        if k + 1 >= n or data[k] != 13 or data[k + 1] != 10:
            return 0, 0, 0, 0
        if data[k - 1] == 32 or data[k - 1] == 9:
            return 0, 0, 0, 0
        size = e - s
        c = data[s] | 32
        if c == 99 and size == 14 and _is(data, s, b"content-length"):  # "c"
            if length >= 0 or k == v or k - v > 15:
                return 0, 0, 0, 0  # (a second one, or empty, or absurd: llhttp decides)
            length = 0
            for i in range(v, k):
                d = data[i]
                if d < 48 or d > 57:
                    return 0, 0, 0, 0
                length = length * 10 + d - 48
        elif c == 99 and size == 10 and _is(data, s, b"connection"):
            if stop or k - v != 10 or not _is(data, v, b"keep-alive"):
                return 0, 0, 0, 0  # (a second one: the router cuts them all, elsewhere)
            cut = s - 2
            stop = k
        elif (
            (c == 116 and size == 17 and _is(data, s, b"transfer-encoding"))
            or (c == 117 and size == 7 and _is(data, s, b"upgrade"))
            or (c == 107 and size == 10 and _is(data, s, b"keep-alive"))
            or (c == 112 and size == 16 and _is(data, s, b"proxy-connection"))
        ):
            return 0, 0, 0, 0
        k += 2


def sub(data: bytes, start: int, stop: int) -> bytes:
    """data[start:stop], for 0 <= start <= stop <= len(data) (unchecked).

    Compiled, a bytes slice is a generic sequence slice (a slice object made
    and taken apart for every one: about 8% of the plain path's user time,
    measured); copying from the buffer makes the new bytes and nothing else."""
    if cython.compiled:
        return cython.cast(cython.p_char, data)[start:stop]
    else:  # (an else, not a fall-through: Cython warns of unreachable code)
        return data[start:stop]


def same(data: bytes, start: int, stop: int, other: bytes) -> bool:
    """data[start:stop] == other, for 0 <= start <= stop <= len(data)
    (unchecked), without making the slice."""
    if cython.compiled:
        n = stop - start
        return n == len(other) and (
            memcmp(PyBytes_AS_STRING(data) + start, PyBytes_AS_STRING(other), n) == 0
        )
    else:
        return stop - start == len(other) and data.startswith(other, start)


def cut(data: bytes, start: int, stop: int) -> bytes:
    """data less data[start:stop], for 0 <= start <= stop <= len(data)
    (unchecked): compiled, one new bytes filled from the buffer, where two
    slices and their sum made three."""
    if cython.compiled:
        n = len(data)
        out = PyBytes_FromStringAndSize(cython.NULL, n - (stop - start))
        dst = PyBytes_AS_STRING(out)
        src = PyBytes_AS_STRING(data)
        memcpy(dst, src, start)
        memcpy(dst + start, src + stop, n - stop)
        return out
    else:
        return data[:start] + data[stop:]


_RID_LINE = b"\r\nX-Request-Id: "
_END = b"\r\n\r\n"


def lane_head(data: bytes, fwd_for: bytes, host: bytes, rid: bytes) -> bytes:
    """The plain lane's forwarded head: `data` (a whole request head) less
    its blank line, then `fwd_for` (the connection's X-Forwarded-* lines up
    to the host), `host`, the X-Request-Id line with `rid`, the blank line.
    Compiled, one new bytes filled from the pieces' buffers, where a slice of
    the head and a join of a tuple made two and copied the head twice."""
    if cython.compiled:
        head = len(data) - 2
        f, h, r = len(fwd_for), len(host), len(rid)
        n = head + f + h + len(_RID_LINE) + r + len(_END)
        out = PyBytes_FromStringAndSize(cython.NULL, n)
        dst = PyBytes_AS_STRING(out)
        memcpy(dst, PyBytes_AS_STRING(data), head)
        dst += head
        memcpy(dst, PyBytes_AS_STRING(fwd_for), f)
        dst += f
        memcpy(dst, PyBytes_AS_STRING(host), h)
        dst += h
        memcpy(dst, PyBytes_AS_STRING(_RID_LINE), len(_RID_LINE))
        dst += len(_RID_LINE)
        memcpy(dst, PyBytes_AS_STRING(rid), r)
        dst += r
        memcpy(dst, PyBytes_AS_STRING(_END), len(_END))
        return out
    else:
        return b"".join((data[:-2], fwd_for, host, _RID_LINE, rid, _END))


def bytes_of(buf: bytearray) -> bytes:
    """bytes(buf), copied from the buffer when compiled (bytes() of a
    bytearray there is a generic call through the buffer protocol)."""
    if cython.compiled:
        return cython.cast(cython.p_char, buf)[: len(buf)]
    else:
        return bytes(buf)


def _is(data: bytes, at: int, name: bytes) -> bool:
    """Whether data[at:at + len(name)] is `name` (lowercase) in any case (the
    caller has checked the length)."""
    for m in range(len(name)):
        c = data[at + m]
        if 65 <= c <= 90:  # A-Z
            c += 32
        if c != name[m]:
            return False
    return True
