"""App specs the controller's tests release."""

from __future__ import annotations

from roost.appspec.model import AppSpec, ProcessSpec

WEB_AND_WORKER = AppSpec(
    processes={
        "web": ProcessSpec(name="web", kind="wsgi", entrypoint="app:app", web=True),
        "worker": ProcessSpec(name="worker", kind="command", command="work"),
    }
)
