"""Cancelling a deploy (`roost deploys cancel ID`): one compare-and-set move to `cancelled`.

A queued deploy is cancelled at once (its upload goes with the move). One
under way is cancelled where it is: the writer driving it (this controller
or another) loses its next compare-and-set and stops there, a safe point:
a builder's result for a cancelled build is discarded, a copy or a release
phase in flight finishes and is not used, and no release is made. A deploy
rolling out has its pending release failed in the same transaction, so the
release serving the app until then keeps serving and the new instances are
dropped. A deploy that ended meanwhile is not cancelled: the caller is told
how it ended.
"""

from __future__ import annotations

import time

from roost.controller.core import Controller
from roost.controller.deployflow import (
    Event,
    IllegalMove,
    Stage,
    cancel_move,
    outcome,
    release_move,
    stage_of,
)
from roost.controller.store import BuildMove, BuildRow
from roost.wire.messages import LogLine

# A deploy moves through a handful of stages; a cancel that lost to each
# of them in turn would still end after this many tries.
TRIES = 12


class Ended(Exception):
    """The deploy ended before it could be cancelled; the message says how."""


async def cancel_deploy(c: Controller, build_id: str, who: str) -> BuildRow:
    """Cancel `build_id` for `who` (an account's email); the build as it is
    now. Ended when it had already ended."""
    store = c.store
    for _ in range(TRIES):
        build = await store.build(build_id)
        try:
            move = cancel_move(build.status)
        except IllegalMove:
            raise Ended(outcome(build.status, build.error, build.release)) from None
        app = await store.app_by_id(build.app_id)
        error = f"cancelled by {who}"
        said = [f"-----> {error}"]
        if stage_of(build.status) is Stage.ROLLING_OUT and build.release is not None:
            rel = await store.release(build.app_id, build.release)
            try:
                failed = release_move(rel.status, Event.CANCELLED)
            except IllegalMove:
                continue  # it went live or failed meanwhile: read its end
            if app.current_release is not None:
                said.append(f"-----> v{app.current_release} keeps serving")
            lines = _lines(app.name, build_id, said)
            done = await store.end_rollout(
                build.app_id, rel.version, failed, error, BuildMove(build_id, move, error), lines
            )
        else:
            done = await store.move_build(build_id, move, error, _lines(app.name, build_id, said))
        if done:
            await store.add_event(
                "deploy-cancelled", f"{app.name}: deploy {build_id} {error}", app.id
            )
            c.wake.set()  # a failed pending release: its instances go
            return await store.build(build_id)
    raise Ended(f"deploy {build_id} kept moving; try again")


def _lines(app: str, build_id: str, said: list[str]) -> list[LogLine]:
    now = time.time()
    return [LogLine(app=app, ts=now, process=build_id, source="build", line=line) for line in said]
