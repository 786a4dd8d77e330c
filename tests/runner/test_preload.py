"""A preloading gunicorn, as roost.appspec.runtime renders it, against the real server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
import psutil

from roost.appspec.webserving import PRELOAD_MODULE, preload_source
from tests.conftest import free_port, wait_until

APP = """
import os

IMPORTED_BY = os.getpid()

def app(environ, start_response):
    body = str(IMPORTED_BY).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
"""


def _gunicorn(tmp_path: Path, port: int) -> subprocess.Popen[str]:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / f"{PRELOAD_MODULE}.py").write_text(preload_source("app:app"))
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
            "--preload",
            "--chdir",
            str(tmp_path / "app"),
            f"{PRELOAD_MODULE}:application",
        ],
        env={"PYTHONPATH": str(bundle), "PATH": "/usr/bin:/bin"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_the_arbiter_imports_the_app_once_before_its_workers(tmp_path: Path) -> None:
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "app.py").write_text(APP)
    port = free_port()
    proc = _gunicorn(tmp_path, port)
    try:

        def answer() -> str:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text
            except httpx.HTTPError:
                return ""

        # Every worker serves the module the arbiter imported before it forked.
        assert wait_until(answer, 30, "gunicorn answers") == str(proc.pid)
        wait_until(lambda: len(psutil.Process(proc.pid).children()) == 2, 30, "two workers")
        assert {answer() for _ in range(20)} == {str(proc.pid)}
    finally:
        proc.terminate()
        proc.wait(30)


def test_a_runtime_error_at_import_says_its_type_and_traceback(tmp_path: Path) -> None:
    """gunicorn reports a RuntimeError raised while it preloads by its message
    alone; the preload module prints what a failed release should show."""
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "app.py").write_text("x = 1\nraise RuntimeError('boom at import')\n")
    proc = _gunicorn(tmp_path, free_port())
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 1, out
    assert "Traceback (most recent call last)" in out and 'app.py", line 2' in out
    assert "RuntimeError: boom at import" in out
