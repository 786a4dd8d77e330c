"""Static files from an app's unpacked static bundle.

Serves `[static]` URL prefixes from the bundle directory: precompressed `.gz`
siblings when the client accepts gzip, `ETag`/`Last-Modified` validators with
304 answers, single byte ranges (206/416), `expires-PREFIX` lifetimes, and an
optional directory listing. The decisions (`plan`) are pure over the file's
metadata and the request headers; `serve` does the I/O. Small files are
written in one go; larger ones are streamed in chunks that wait for the client
to drain, so a slow reader never makes the router buffer a whole file.

The path is decoded and split into segments; `..`, NUL and backslashes are
refused, so a request cannot leave the bundle. A bundle came out of a build,
which ran untrusted code, so its tree is not trusted either: every file is
opened beneath the bundle directory with no symlink followed on the way
(roost.router.safeopen: openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS), and
what was opened is then checked with fstat: only a directory, or a regular
file with no other name (a hard link may name a file outside), is served;
anything else is a 404. The descriptor checked is the one read, so nothing
can be swapped in between.
"""

from __future__ import annotations

import html
import io
import mimetypes
import os
import stat
import time
from dataclasses import dataclass, field
from email.utils import formatdate, parsedate_to_datetime
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote, unquote_to_bytes

from roost.router.clienterror import abort_response, local_error
from roost.router.h1 import accepts_gzip, response_head
from roost.router.safeopen import open_beneath, path_parts
from roost.wire.messages import StaticRoute

if TYPE_CHECKING:
    from roost.router.client import ClientConnection
    from roost.router.exchange import Exchange
    from roost.router.table import AppEntry

CHUNK = 256 * 1024


@lru_cache(maxsize=512)
def content_type(name: str) -> bytes:
    kind, _ = mimetypes.guess_type(name, strict=False)
    if kind is None:
        return b"application/octet-stream"
    if kind.startswith("text/") or kind in ("application/javascript", "application/json"):
        return f"{kind}; charset=utf-8".encode()
    return kind.encode()


def safe_segments(rel: bytes) -> list[str] | None:
    """URL path (after the prefix) -> path segments, or None when it tries to escape."""
    try:
        text = unquote_to_bytes(rel).decode("utf-8")
    except UnicodeDecodeError:
        return None
    out: list[str] = []
    for seg in text.split("/"):
        if seg in ("", "."):
            continue
        if seg == ".." or "\0" in seg or "\\" in seg:
            return None
        out.append(seg)
    return out


def parse_range(value: bytes, size: int) -> tuple[int, int] | bool | None:
    """A single `bytes=` range -> (first, last) inclusive; None to ignore the
    header (malformed or several ranges); False when unsatisfiable."""
    unit, _, spec = value.strip().partition(b"=")
    if unit.strip().lower() != b"bytes" or b"," in spec:
        return None
    first_s, dash, last_s = spec.strip().partition(b"-")
    if not dash:
        return None
    try:
        if not first_s:  # suffix: the last N bytes
            n = int(last_s)
            if n <= 0:
                return False
            return (max(0, size - n), size - 1) if size else False
        first = int(first_s)
        last = int(last_s) if last_s else size - 1
    except ValueError:
        return None
    if first < 0:
        return None
    if first >= size:
        return False
    if last < first:
        return None
    return first, min(last, size - 1)


def _etag_matches(header: bytes, etags: tuple[bytes, ...]) -> bool:
    if header.strip() == b"*":
        return True
    for tag in header.split(b","):
        tag = tag.strip()
        if tag.startswith(b"W/"):
            tag = tag[2:]
        if tag in etags:
            return True
    return False


@dataclass
class Plan:
    status: int
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    path: str = ""
    offset: int = 0
    length: int = 0


def plan(
    fs_path: str,
    size: int,
    mtime_ns: int,
    request: dict[bytes, bytes],
    *,
    gz: tuple[str, int] | None,
    expires: int | None,
) -> Plan:
    """What to answer for a file: pure over its metadata and the request headers."""
    etag = b'"%x-%x"' % (mtime_ns, size)
    gz_etag = etag[:-1] + b'-gz"'
    mtime = mtime_ns // 1_000_000_000
    common: list[tuple[bytes, bytes]] = [
        (b"Last-Modified", formatdate(mtime, usegmt=True).encode()),
    ]
    if gz is not None:
        common.append((b"Vary", b"Accept-Encoding"))
    if expires is not None:
        common.append((b"Cache-Control", b"max-age=%d" % max(0, expires)))
        common.append((b"Expires", formatdate(time.time() + max(0, expires), usegmt=True).encode()))
    use_gz = (
        gz is not None
        and accepts_gzip(request.get(b"accept-encoding", b""))
        and (b"range" not in request)
    )
    tag = gz_etag if use_gz else etag
    inm = request.get(b"if-none-match")
    not_modified = False
    if inm is not None:
        not_modified = _etag_matches(inm, (etag, gz_etag))
    elif b"if-modified-since" in request:
        try:
            since = parsedate_to_datetime(
                request[b"if-modified-since"].decode("latin-1")
            ).timestamp()
            not_modified = mtime <= since
        except (TypeError, ValueError, IndexError, OverflowError):
            not_modified = False
    if not_modified:
        return Plan(304, [(b"ETag", tag), *common])
    ctype = content_type(fs_path)
    if use_gz:
        assert gz is not None
        return Plan(
            200,
            [(b"Content-Type", ctype), (b"Content-Encoding", b"gzip"), (b"ETag", gz_etag), *common],
            gz[0],
            0,
            gz[1],
        )
    headers = [(b"Content-Type", ctype), (b"ETag", etag), (b"Accept-Ranges", b"bytes"), *common]
    rng = request.get(b"range")
    if rng is not None:
        if_range = request.get(b"if-range")
        if if_range is None or if_range.strip() == etag:
            r = parse_range(rng, size)
            if r is False:
                return Plan(416, [(b"Content-Range", b"bytes */%d" % size), *common])
            if isinstance(r, tuple):
                first, last = r
                headers.append((b"Content-Range", b"bytes %d-%d/%d" % (first, last, size)))
                return Plan(206, headers, fs_path, first, last - first + 1)
    return Plan(200, headers, fs_path, 0, size)


_WANTED = frozenset(
    {b"accept-encoding", b"range", b"if-range", b"if-none-match", b"if-modified-since"}
)


def _request_headers(ex: Exchange) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    headers = ex.headers  # (flat: name, value, ...)
    for i in range(0, len(headers), 2):
        ln = headers[i].lower()
        if ln in _WANTED:
            out[ln] = headers[i + 1]
    return out


def serve(
    client: ClientConnection,
    ex: Exchange,
    entry: AppEntry,
    prefix: bytes,
    rule: StaticRoute,
    bundle: Path,
    path: bytes,
) -> None:
    if ex.method not in (b"GET", b"HEAD"):
        local_error(
            client, ex, 405, "Method not allowed", "Static files answer GET and HEAD only.",
            extra=[(b"Allow", b"GET, HEAD")],
        )  # fmt: skip
        return
    base = path_parts(rule.path)
    if rule.is_file:
        if path.rstrip(b"/") != prefix.rstrip(b"/"):
            return _not_found(client, ex)
        segments: list[str] | None = []
    else:
        segments = safe_segments(path[len(prefix) :])
    if segments is None or base is None:
        return _not_found(client, ex)
    try:
        # The bundle directory itself is the router's own (its cache): the
        # one path opened the ordinary way. Everything under it is not.
        root = os.open(bundle, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return _not_found(client, ex)
    try:
        _serve_beneath(client, ex, entry, rule, root, base + segments, path)
    finally:
        os.close(root)


def _open_entry(dirfd: int, parts: list[str]) -> tuple[int, os.stat_result] | None:
    """(fd, its stat) for a directory or a single-named regular file beneath
    `dirfd`; None for anything else (missing, a link anywhere on the way,
    a FIFO, a device, a hard link)."""
    try:
        fd = open_beneath(dirfd, parts)
    except (OSError, ValueError):
        return None
    st = os.fstat(fd)
    if stat.S_ISDIR(st.st_mode) or (stat.S_ISREG(st.st_mode) and st.st_nlink == 1):
        return fd, st
    os.close(fd)
    return None


def _serve_beneath(
    client: ClientConnection,
    ex: Exchange,
    entry: AppEntry,
    rule: StaticRoute,
    root: int,
    parts: list[str],
    path: bytes,
) -> None:
    found = _open_entry(root, parts)
    if found is None:
        return _not_found(client, ex)
    fd, st = found
    gz_fd = -1
    try:
        if stat.S_ISDIR(st.st_mode):
            if not path.endswith(b"/"):
                query = ex.url.partition(b"?")[2]
                location = path + b"/" + (b"?" + query if query else b"")
                return _send(client, ex, 301, [(b"Location", location)], b"")
            index = _open_entry(fd, ["index.html"])
            if index is None or not stat.S_ISREG(index[1].st_mode):
                if index is not None:
                    os.close(index[0])
                if rule.directory_indexes:
                    body = listing(fd, path.decode("utf-8", "replace"))
                    ctype = (b"Content-Type", b"text/html; charset=utf-8")
                    return _send(client, ex, 200, [ctype], body)
                return _not_found(client, ex)
            os.close(fd)
            fd, st = index
            parts = [*parts, "index.html"]
        fs_path = "/".join(parts)
        gz: tuple[str, int] | None = None
        sibling = _open_entry(root, [*parts[:-1], parts[-1] + ".gz"]) if parts else None
        if sibling is not None:
            if stat.S_ISREG(sibling[1].st_mode):
                gz_fd, gz = sibling[0], (fs_path + ".gz", sibling[1].st_size)
            else:
                os.close(sibling[0])
        expires = entry.expires_for(path)
        p = plan(fs_path, st.st_size, st.st_mtime_ns, _request_headers(ex), gz=gz, expires=expires)
        if p.status != 200 and p.status != 206:
            return _send(
                client, ex, p.status, p.headers, b"", length=0 if p.status == 304 else None
            )
        # The chosen representation's descriptor goes to _send_file (which
        # closes it); the other is closed below.
        if gz is not None and p.path == gz[0]:
            chosen, gz_fd = gz_fd, -1
        else:
            chosen, fd = fd, -1
        _send_file(client, ex, p, io.FileIO(chosen, "rb", closefd=True))
    finally:
        if fd >= 0:
            os.close(fd)
        if gz_fd >= 0:
            os.close(gz_fd)


def _not_found(client: ClientConnection, ex: Exchange) -> None:
    local_error(client, ex, 404, "Not found", "There is no file at this address.")


def _send(
    client: ClientConnection,
    ex: Exchange,
    status: int,
    headers: list[tuple[bytes, bytes]],
    body: bytes,
    length: int | None = None,
) -> None:
    headers = [*headers, (b"X-Request-Id", ex.rid)]
    if status == 304:
        head = response_head(
            status, headers, content_length=None, keep_alive=ex.keep_alive, http10=ex.http10
        )
    else:
        head = response_head(
            status, headers, content_length=len(body) if length is None else length,
            keep_alive=ex.keep_alive, http10=ex.http10,
        )  # fmt: skip
    ex.status = status
    ex.bytes_out = 0 if ex.method == b"HEAD" else len(body)
    ex.done = True
    if not client.closed:
        client.write(head if ex.method == b"HEAD" else head + body)
    client.exchange_done(ex)


def _send_file(client: ClientConnection, ex: Exchange, p: Plan, fh: io.FileIO) -> None:
    """Send the file open at `fh` (p.path is only its name); closes `fh`.

    A file object rather than a bare descriptor: if the streaming task is
    cancelled before it ever runs, collecting it still closes the file."""
    headers = [*p.headers, (b"X-Request-Id", ex.rid)]
    head = response_head(
        p.status, headers, content_length=p.length, keep_alive=ex.keep_alive, http10=ex.http10
    )
    if ex.method == b"HEAD" or p.length <= CHUNK:
        with fh:
            try:
                data = os.pread(fh.fileno(), p.length, p.offset) if ex.method != b"HEAD" else b""
            except OSError:
                return _not_found(client, ex)
        ex.status = p.status
        ex.bytes_out = len(data)
        ex.done = True
        client.write(head + data)
        client.exchange_done(ex)
        return
    ex.status = p.status
    client.write(head)
    client.ctx.spawn(_stream(client, ex, p, fh))


async def _stream(client: ClientConnection, ex: Exchange, p: Plan, fh: io.FileIO) -> None:
    fd = fh.fileno()
    try:
        offset, remaining = p.offset, p.length
        while remaining > 0:
            data = os.pread(fd, min(CHUNK, remaining), offset)
            if not data:
                abort_response(client, ex, "static file shrank while being sent")
                return
            offset += len(data)
            remaining -= len(data)
            ex.bytes_out += len(data)
            if client.closed:
                return
            client.write(data)
            await client.drain()
    except ConnectionResetError:
        return
    finally:
        fh.close()
    ex.done = True
    client.exchange_done(ex)


def listing(dirfd: int, url_path: str) -> bytes:
    """An HTML index of the directory open at `dirfd`: its directories and
    regular files (links and special files are not shown: they are not served)."""
    with os.scandir(dirfd) as it:
        kinds = {
            e.name: e.is_dir(follow_symlinks=False)
            for e in it
            if e.is_dir(follow_symlinks=False) or e.is_file(follow_symlinks=False)
        }
    names = sorted(kinds)
    rows = []
    for name in names:
        if name.endswith(".gz") and name[:-3] in kinds:
            continue  # precompressed variants are an implementation detail
        slash = "/" if kinds[name] else ""
        rows.append(f'<li><a href="{quote(name)}{slash}">{html.escape(name)}{slash}</a></li>')
    title = html.escape(url_path)
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>Index of {title}</title></head>"
        f"<body><h1>Index of {title}</h1><ul><li><a href='../'>../</a></li>{''.join(rows)}</ul>"
        "</body></html>"
    ).encode()
