"""Test set-up: a release made live the way the controller ends a rollout."""

from __future__ import annotations

from roost.controller.deployflow import Event, ReleaseState, release_move
from roost.controller.store import Store


def go_live(store: Store, app_id: int, version: int) -> None:
    """Pending release `version` came up: it serves, the one before steps aside."""
    assert store.end_rollout(app_id, version, release_move(ReleaseState.PENDING, Event.UP))


def digest(c: str) -> str:
    """A well-formed digest: the hex character `c` 64 times."""
    return "sha256:" + c * 64
