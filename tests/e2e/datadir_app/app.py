"""Files in the data directory: `/put/NAME?v=TEXT` writes (and fsyncs) NAME,
`/fill/NAME?mb=N` writes N MiB there, `/get/NAME` serves it (404 when
missing), `/me` says which uid and directory answer (507 when a write fails).
Every answer names its instance, so a test can tell them apart."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from urllib.parse import parse_qs

DATA = Path(os.environ.get("ROOST_DATA_DIR", "../data"))
ME = os.environ.get("ROOST_INSTANCE_ID", "?")


def app(environ: dict[str, object], start_response: Callable[..., object]) -> Iterable[bytes]:
    path = str(environ.get("PATH_INFO", "/"))
    status, body = "200 OK", b""
    try:
        if path.startswith("/put/"):
            value = parse_qs(str(environ.get("QUERY_STRING", ""))).get("v", [""])[0]
            target = DATA / path.removeprefix("/put/")
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "w") as fh:
                fh.write(value)
                fh.flush()
                os.fsync(fh.fileno())
            body = b"stored\n"
        elif path.startswith("/fill/"):
            mb = int(parse_qs(str(environ.get("QUERY_STRING", ""))).get("mb", ["1"])[0])
            with open(DATA / path.removeprefix("/fill/"), "wb") as fh:
                for _ in range(mb):
                    fh.write(b"x" * (1 << 20))
                fh.flush()
                os.fsync(fh.fileno())
            body = b"filled\n"
        elif path.startswith("/get/"):
            body = (DATA / path.removeprefix("/get/")).read_bytes()
        elif path == "/me":
            body = f"{os.getuid()} {DATA}\n".encode()
    except FileNotFoundError:
        status, body = "404 Not Found", b"missing\n"
    except OSError as exc:
        status, body = "507 Insufficient Storage", f"{exc}\n".encode()
    headers = [("Content-Type", "text/plain"), ("X-Instance", ME)]
    start_response(status, [*headers, ("Content-Length", str(len(body)))])
    return [body]
