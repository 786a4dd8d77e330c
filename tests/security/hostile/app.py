"""A hostile tenant: its WSGI app runs the probes on request; importing it at
build time (the builder's import check, which runs because the app has a
release phase: its Procfile) runs them too, and leaves a process behind that
tries to outlive the build."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from contextlib import redirect_stdout

import probe

if "ROOST_INSTANCE_ID" not in os.environ and "ROOST_PROCESS" not in os.environ:
    # Build time: the import check. Probe, and leave a daemon behind that a
    # later build (of this or another app) would meet.
    probe.main("build")
    subprocess.Popen(
        ["sleep", "4242"],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    sys.stdout.flush()


def app(environ: dict[str, object], start_response: object) -> list[bytes]:
    out = io.StringIO()
    with redirect_stdout(out):
        probe.main("instance")
    body = out.getvalue().encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])  # type: ignore[operator]
    return [body]
