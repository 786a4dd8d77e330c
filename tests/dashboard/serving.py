"""A controller with an app, and its HTTP API served for real on a free
port in a thread of the test's process, for a browser to load the dashboard
from."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import uvicorn

from roost.appspec.model import AppSpec, ProcessSpec
from roost.controller.api.app import create_api
from roost.controller.astore import AsyncStore
from roost.controller.core import Controller
from roost.controller.service import ControllerService
from roost.controller.store import AppRow, Store
from roost.settings import Settings
from roost.state.db import make_engine
from tests.conftest import free_port
from tests.migrated import migrated_sqlite
from tests.releases import go_live


@dataclass
class Board:
    store: Store
    controller: Controller
    token: str  # an admin's
    app: AppRow
    release: int  # the app's live release


def board_with_app(tmp_path: Path, name: str = "webshop") -> Board:
    """A state database with an admin and one app whose first release (a
    `web` process) is live; the controller over it. Close `controller.store`."""
    url = migrated_sqlite(tmp_path / "state.db")
    store = Store(make_engine(url))
    controller = Controller(AsyncStore(store), Settings(), "ctl-a")
    owner = store.create_account("ops@example.com", is_admin=True)
    app = store.create_app(name, owner)
    spec = AppSpec(
        processes={"web": ProcessSpec(name="web", kind="wsgi", entrypoint="app:app", web=True)}
    )
    v = store.create_release(app.id, "b1", "sha256:aa", "", spec, "", "first deploy")
    go_live(store, app.id, v)
    return Board(store, controller, store.issue_token(owner), app, v)


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
