"""Against the real app server the platform runs: gunicorn (sync workers, which
close every connection), over its unix socket."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from roost.wire.messages import AppRoute, Backend

WSGI = """
def app(environ, start_response):
    body = environ["wsgi.input"].read()
    out = "%s %s %s %s %d" % (
        environ["REQUEST_METHOD"],
        environ["PATH_INFO"],
        environ.get("HTTP_X_FORWARDED_PROTO"),
        environ.get("HTTP_X_FORWARDED_FOR"),
        len(body),
    )
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [out.encode()]
"""


async def test_proxies_to_gunicorn_over_its_unix_socket(router: Any, tmp_path: Path) -> None:
    (tmp_path / "wsgi.py").write_text(WSGI)
    sock = tmp_path / "web.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "--bind", f"unix:{sock}", "--workers", "1", "wsgi:app"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(200):
            if sock.exists():
                break
            await asyncio.sleep(0.05)
        backend = Backend(instance_id="web.1", host="", port=0, unix_socket=str(sock))
        route = AppRoute(app="g", hostnames=["g.localhost"], backends=[backend])
        async with router([route]) as r, httpx.AsyncClient() as c:
            base = f"http://127.0.0.1:{r.port}"
            for _ in range(3):  # gunicorn closes each connection; ours stays open
                resp = await c.get(f"{base}/hi", headers={"Host": "g.localhost"})
                assert resp.text == "GET /hi http 127.0.0.1 0"
            resp = await c.post(
                f"{base}/up", headers={"Host": "g.localhost"}, content=b"x" * 300_000
            )
            assert resp.text == "POST /up http 127.0.0.1 300000"
    finally:
        proc.terminate()
        proc.wait(10)
