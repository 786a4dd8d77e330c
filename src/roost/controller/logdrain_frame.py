"""Log lines as RFC 5424 syslog messages, framed as Heroku's drains (pure).

One line becomes `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG`:
HOSTNAME is the app's name (a shared receiver tells apps apart by it),
APP-NAME the line's source (`app`, `router`, `roost` for the platform's
own lines), PROCID its process (`web.1`), MSGID the drain's token, and the
priority local7 with info for stdout and err for stderr, as Heroku's.
Header fields hold printable US-ASCII only and are cut to the RFC's
lengths; MSG is UTF-8, cut (on a character boundary) so a whole message
stays within MAX_MESSAGE, the size rsyslog takes by default.

Framing is octet counting (RFC 6587 3.4.1): `LEN SP MESSAGE`, so a line
may hold anything, newlines included. An HTTPS batch is such frames one
after another, POSTed with Heroku's Logplex headers (`batch_headers`).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence

from roost.wire.messages import LogLine

FACILITY = 23  # local7
SEVERITY = {"stdout": 6, "stderr": 3}  # info, err
MAX_MESSAGE = 8192
NIL = "-"
_SOURCE_NAMES = {"platform": "roost"}


TOKEN_MAX = 32  # RFC 5424's MSGID length


def _field(value: str, limit: int) -> str:
    """A header field: printable US-ASCII (33-126) only, at most `limit` long."""
    value = value[:limit]
    if value.isascii() and value.isprintable() and " " not in value:
        return value or NIL  # (the common case, without a loop in Python)
    return "".join(ch if 33 <= ord(ch) <= 126 else "_" for ch in value) or NIL


@functools.lru_cache(maxsize=256)
def _second(whole: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))


def timestamp(ts: float) -> str:
    """RFC 5424's TIMESTAMP in UTC with microseconds."""
    whole = int(ts)
    micros = min(999_999, max(0, round((ts - whole) * 1_000_000)))
    return f"{_second(whole)}.{micros:06d}+00:00"


def parts(line: LogLine) -> tuple[bytes, bytes]:
    """`line`'s message without its MSGID: what goes before and after it. A
    line is framed once whatever the number of drains; each adds its token."""
    pri = FACILITY * 8 + SEVERITY.get(line.stream, 6)
    host = _field(line.app, 255)
    app = _field(_SOURCE_NAMES.get(line.source, line.source), 48)
    head = f"<{pri}>1 {timestamp(line.ts)} {host} {app} {_field(line.process, 128)} "
    before = head.encode("ascii")
    room = MAX_MESSAGE - len(before) - TOKEN_MAX - 3  # " - ": no structured data
    body = line.line.encode("utf-8", "replace")
    if len(body) > room:
        # Cut on a character boundary: a character the cut split goes whole.
        body = body[:room].decode("utf-8", "ignore").encode("utf-8")
    return before, b" - " + body


def message(line: LogLine, token: str) -> bytes:
    """One RFC 5424 message for `line` (no framing)."""
    before, after = parts(line)
    return before + _field(token, TOKEN_MAX).encode("ascii") + after


def frame(msg: bytes) -> bytes:
    """Octet-counted framing: the message's length in bytes, a space, the message."""
    return b"%d %s" % (len(msg), msg)


def frames(lines: Sequence[LogLine], token: str) -> list[bytes]:
    return frames_each(lines, [token])[0]


def frames_each(lines: Sequence[LogLine], tokens: Sequence[str]) -> list[list[bytes]]:
    """`lines` framed for each of several drains (their `tokens`), in order."""
    marks = [_field(t, TOKEN_MAX).encode("ascii") for t in tokens]
    out: list[list[bytes]] = [[] for _ in marks]
    for ln in lines:
        before, after = parts(ln)
        for mark, dest in zip(marks, out, strict=True):
            msg = before + mark + after
            dest.append(b"%d %s" % (len(msg), msg))
    return out


def batch_headers(token: str, count: int, frame_id: str) -> dict[str, str]:
    """Headers of an HTTPS batch, as Heroku's HTTPS drains send them."""
    return {
        "Content-Type": "application/logplex-1",
        "Logplex-Msg-Count": str(count),
        "Logplex-Frame-Id": frame_id,
        "Logplex-Drain-Token": token,
        "User-Agent": "roost-logdrain",
    }
