"""A controller's HTTP API served for real on a free port, in a thread of
the test's process, for a browser to load the dashboard from."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from roost.controller.api.app import create_api
from roost.controller.core import Controller
from roost.controller.service import ControllerService
from tests.conftest import free_port


@contextmanager
def serving(controller: Controller) -> Iterator[str]:
    """The API's base URL while it serves; stopped (and its thread joined) after."""
    port = free_port()
    api = create_api(controller, ControllerService(controller, None))
    server = uvicorn.Server(uvicorn.Config(api, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the API did not start serving")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
