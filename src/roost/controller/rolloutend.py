"""The end of a rollout, as the deploy's state machine (deployflow) says.

`rollout.decide` says when a pending release is up or has failed; this
writes it: the release and the deploy that made it move together, as a
compare-and-set from what was read, with the deploy's closing lines in the
same transaction, then the platform event, and a deploy's release that went
live is handed to its postdeploy (`after_live`).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from roost.controller import deployflow, rollout
from roost.controller.astore import AsyncStore
from roost.controller.store import BuildMove, NotFound, ReleaseRow
from roost.wire.messages import LogLine


async def end_rollout(
    store: AsyncStore,
    app_name: str,
    rel: ReleaseRow,
    d: rollout.Decision,
    after_live: Callable[[str, ReleaseRow], None] | None,
) -> bool:
    """End a rollout by the deploy's table (deployflow): live, rolled back
    (an older release keeps serving) or failed; the release and the deploy
    that made it move together, as a compare-and-set from what was read.
    When another controller ended it, or a newer release superseded it,
    nothing is written and nothing said. True when `rel` went live."""
    serving = (await store.app_by_id(rel.app_id)).current_release
    event = deployflow.rollout_end(d.verdict == "fail", serving is not None)
    error = f"v{rel.version} did not start: {d.reason}"
    if event is deployflow.Event.ROLLED_BACK:
        error = f"v{serving} keeps serving; {error}"
    deploy = None
    if rel.build_id:  # its own deploy's build, not the one a copy was made from
        # (a build moved elsewhere by hand is left alone: the release still ends)
        with contextlib.suppress(NotFound, deployflow.IllegalMove):
            build = await store.build(rel.build_id)
            if build.release == rel.version:
                move = deployflow.build_move(build.status, event)
                deploy = BuildMove(build.id, move, "" if event is deployflow.Event.UP else error)
    move = deployflow.release_move(rel.status, event)
    build_log = rel.build_id or ""
    if event is deployflow.Event.UP:
        said = [f"-----> v{rel.version} is live"]
    else:
        said = [f"-----> v{rel.version} failed to start: {d.reason}"]
        if serving is not None:
            said.append(f"-----> v{serving} keeps serving")
    now = time.time()
    lines = [
        LogLine(app=app_name, ts=now, process=build_log, source="build", line=line) for line in said
    ]
    # The closing lines go with the move: a build stream that sees the
    # final stage has seen them too.
    if not await store.end_rollout(rel.app_id, rel.version, move, d.reason, deploy, lines):
        return False
    if event is deployflow.Event.UP:
        await store.add_event("deploy", f"{app_name} v{rel.version} is live", rel.app_id)
        await store.notify_event(
            "deploy-succeeded", app_name, f"v{rel.version} is live", version=rel.version
        )
        if deploy is not None and after_live is not None:
            after_live(app_name, rel)  # a deploy's release, not a copy's
        return True
    await store.add_event("deploy-failed", f"{app_name} v{rel.version}: {d.reason}", rel.app_id)
    await store.notify_event(
        "deploy-failed", app_name, f"v{rel.version}: {d.reason}", version=rel.version
    )
    return False
