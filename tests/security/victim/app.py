"""The victim: an app with a secret in its data directory and its config."""

from __future__ import annotations

import os
from pathlib import Path

if "ROOST_INSTANCE_ID" in os.environ:
    Path(os.environ["ROOST_DATA_DIR"], "secret.txt").write_text("victim's secret\n")


def app(environ: dict[str, object], start_response: object) -> list[bytes]:
    body = b"victim ok\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])  # type: ignore[operator]
    return [body]
