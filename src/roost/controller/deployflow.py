"""The deploy as a state machine: what a build and its release may become. Pure.

A deploy moves through stages; the build row's `status` is its stage, and
the release row's `status` follows it. This module is the only place that
says which moves are allowed; the store writes a move only as a
compare-and-set from the stage it was read in, so a retried delivery or a
second controller acting on the same deploy changes nothing: the first
move of a build result (building -> provisioning, or -> failed) is its
claim, and whoever loses a compare-and-set stops.

    queued ──started──▶ building ──built──▶ provisioning ──provisioned──▶ copying ──copied──▶
    release-phase ──release-ran──▶ releasing ──released──▶ rolling-out ──up──▶ live
         │                    │                   │        │            │
         └──── failed ◀───────┴───────────────────┴────────┘            ├─ rollout failed, an
                                                                        │  older release serves
                                                                        │  ──▶ rolled-back
                                                                        └─ rollout failed, none
                                                                           ──▶ failed

A deploy arriving while another of the same app has not ended starts
`queued` (its upload kept in the state database) and builds once every
earlier one ended, oldest first (`next_to_start`; the claim, queued ->
building, is a compare-and-set under the app's row lock, so two controllers
never start two). Any stage before the end may move to `cancelled` (`roost
deploys cancel`); the writer driving the deploy loses its next
compare-and-set there and stops; a pending release is failed with it.

Each stage is written as it starts, so a reader (`GET /api/builds/ID`, the
build stream, `git push`) sees where a deploy is. An app asking for no
service passes provisioning by `no-services`, and one with no predeploy or
release command the release phase by `no-release-command`. The release
phase runs those commands in the new image before any release exists: a
failure there fails the deploy with nothing released, the serving release
untouched. A release superseded by a newer one before it came up fails its
build too.

A release is `pending` while its deploy rolls out, then `active` (and the one
before it `superseded`), or `failed`. A release made without a build (a config
change, a restart, a rollback: a copy of an existing image) has only the
release side: it starts `pending` and takes the same rollout events.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum


class Stage(StrEnum):
    QUEUED = "queued"  # waits for the app's earlier deploy to end (its upload kept)
    BUILDING = "building"
    PROVISIONING = "provisioning"
    COPYING = "copying"
    RELEASE_PHASE = "release-phase"  # predeploy and release commands, in the new image
    RELEASING = "releasing"
    ROLLING_OUT = "rolling-out"
    LIVE = "live"
    FAILED = "failed"
    ROLLED_BACK = "rolled-back"
    CANCELLED = "cancelled"  # `roost deploys cancel`: the serving release untouched

    @property
    def final(self) -> bool:
        return self in FINAL


FINAL = frozenset({Stage.LIVE, Stage.FAILED, Stage.ROLLED_BACK, Stage.CANCELLED})

# Stages written by older versions of Roost, read as today's.
LEGACY_STAGES = {"deploying": Stage.ROLLING_OUT, "succeeded": Stage.LIVE}


class ReleaseState(StrEnum):
    PENDING = "pending"
    ACTIVE = "active"
    SUPERSEDED = "superseded"
    FAILED = "failed"
    # It went live, then crash-looped within the rollback window, and a copy
    # of the release before it replaced it (controller/aftercare.py): never a
    # rollback target, never rolled back from twice.
    ROLLED_BACK = "rolled-back"


class Event(StrEnum):
    STARTED = "started"  # the app's earlier deploy ended: this one builds
    CANCELLED = "cancelled"  # a user cancelled it (any stage before the end)
    BUILT = "built"  # the builder produced an image
    BUILD_FAILED = "build-failed"
    NO_SERVICES = "no-services"  # the app asks for no service: nothing to provision
    PROVISIONED = "provisioned"
    PROVISION_FAILED = "provision-failed"
    COPIED = "copied"  # a second host holds the image
    COPY_FAILED = "copy-failed"
    RELEASE_RAN = "release-ran"  # predeploy and release commands exited 0
    NO_RELEASE_COMMAND = "no-release-command"  # the app has neither: nothing to run
    RELEASE_PHASE_FAILED = "release-phase-failed"  # one exited non-zero or ran out of time
    RELEASED = "released"  # the release row exists, pending
    RELEASE_FAILED = "release-failed"  # e.g. the app was deleted meanwhile
    UP = "up"  # every instance of the release reports up
    ROLLOUT_FAILED = "rollout-failed"  # crashed or too slow; no older release serves
    ROLLED_BACK = "rolled-back"  # crashed or too slow; the older release keeps serving
    SUPERSEDED = "superseded"  # a newer release replaced this one before it came up
    CRASH_LOOPED = "crash-looped"  # live, then crash-looped in the rollback window


BUILD_MOVES: dict[tuple[Stage, Event], Stage] = {
    (Stage.QUEUED, Event.STARTED): Stage.BUILDING,
    (Stage.QUEUED, Event.BUILD_FAILED): Stage.FAILED,  # its kept upload is gone
    (Stage.BUILDING, Event.BUILT): Stage.PROVISIONING,
    (Stage.BUILDING, Event.BUILD_FAILED): Stage.FAILED,
    (Stage.PROVISIONING, Event.PROVISIONED): Stage.COPYING,
    (Stage.PROVISIONING, Event.NO_SERVICES): Stage.COPYING,
    (Stage.PROVISIONING, Event.PROVISION_FAILED): Stage.FAILED,
    (Stage.COPYING, Event.COPIED): Stage.RELEASE_PHASE,
    (Stage.COPYING, Event.COPY_FAILED): Stage.FAILED,
    (Stage.RELEASE_PHASE, Event.RELEASE_RAN): Stage.RELEASING,
    (Stage.RELEASE_PHASE, Event.NO_RELEASE_COMMAND): Stage.RELEASING,
    (Stage.RELEASE_PHASE, Event.RELEASE_PHASE_FAILED): Stage.FAILED,
    (Stage.RELEASING, Event.RELEASED): Stage.ROLLING_OUT,
    (Stage.RELEASING, Event.RELEASE_FAILED): Stage.FAILED,
    (Stage.ROLLING_OUT, Event.UP): Stage.LIVE,
    (Stage.ROLLING_OUT, Event.ROLLOUT_FAILED): Stage.FAILED,
    (Stage.ROLLING_OUT, Event.ROLLED_BACK): Stage.ROLLED_BACK,
    (Stage.ROLLING_OUT, Event.SUPERSEDED): Stage.FAILED,
    # Live, then crash-looped in the rollback window: rolled back by itself
    # (its release's move, in the same transaction).
    (Stage.LIVE, Event.CRASH_LOOPED): Stage.ROLLED_BACK,
}
# A deploy may be cancelled at any stage before its end; whoever drives it
# loses its next compare-and-set there and stops (a safe point).
BUILD_MOVES.update({(s, Event.CANCELLED): Stage.CANCELLED for s in Stage if not s.final})

# The event that fails each stage whose own work failed (or raised).
FAILURE: dict[Stage, Event] = {
    Stage.QUEUED: Event.BUILD_FAILED,
    Stage.BUILDING: Event.BUILD_FAILED,
    Stage.PROVISIONING: Event.PROVISION_FAILED,
    Stage.COPYING: Event.COPY_FAILED,
    Stage.RELEASE_PHASE: Event.RELEASE_PHASE_FAILED,
    Stage.RELEASING: Event.RELEASE_FAILED,
    Stage.ROLLING_OUT: Event.ROLLOUT_FAILED,
}

RELEASE_MOVES: dict[tuple[ReleaseState, Event], ReleaseState] = {
    (ReleaseState.PENDING, Event.UP): ReleaseState.ACTIVE,
    (ReleaseState.PENDING, Event.ROLLOUT_FAILED): ReleaseState.FAILED,
    (ReleaseState.PENDING, Event.ROLLED_BACK): ReleaseState.FAILED,
    (ReleaseState.PENDING, Event.SUPERSEDED): ReleaseState.FAILED,
    (ReleaseState.PENDING, Event.CANCELLED): ReleaseState.FAILED,
    # A newer release went live: the one serving until then steps aside.
    (ReleaseState.ACTIVE, Event.SUPERSEDED): ReleaseState.SUPERSEDED,
    # Marked while it still serves: the copy of the one before replaces it.
    (ReleaseState.ACTIVE, Event.CRASH_LOOPED): ReleaseState.ROLLED_BACK,
}


class IllegalMove(Exception):
    def __init__(self, what: str, state: str, event: Event) -> None:
        super().__init__(f"a {what} in state {state!r} cannot take {event.value!r}")
        self.state = state
        self.event = event


@dataclass(frozen=True)
class Move:
    """One allowed move: write `after` where the row still says `before`."""

    before: str
    after: str


def stage_of(status: str) -> Stage:
    """A stored build status as a stage; an unknown one is an error, not a guess."""
    if status in LEGACY_STAGES:
        return LEGACY_STAGES[status]
    return Stage(status)


def build_move(status: str, event: Event) -> Move:
    stage = stage_of(status)
    after = BUILD_MOVES.get((stage, event))
    if after is None:
        raise IllegalMove("build", stage.value, event)
    return Move(status, after.value)


def release_move(status: str, event: Event) -> Move:
    state = ReleaseState(status)
    after = RELEASE_MOVES.get((state, event))
    if after is None:
        raise IllegalMove("release", state.value, event)
    return Move(status, after.value)


def failure_move(status: str) -> Move:
    """The move that fails a deploy at `status` because that stage's work
    failed; IllegalMove for a deploy that already ended."""
    stage = stage_of(status)
    return build_move(status, FAILURE.get(stage, Event.BUILD_FAILED))


def rollout_end(verdict_failed: bool, older_serves: bool) -> Event:
    """The event a finished rollout is: up, or failed with or without a
    release still serving the app's visitors."""
    if not verdict_failed:
        return Event.UP
    return Event.ROLLED_BACK if older_serves else Event.ROLLOUT_FAILED


def describe(stage: Stage) -> str:
    """What a user reading `roost deploys` should take a stage to mean."""
    return {
        Stage.QUEUED: "waiting for the app's earlier deploy to end",
        Stage.BUILDING: "building the image",
        Stage.PROVISIONING: "provisioning the app's services",
        Stage.COPYING: "copying the image to a second host",
        Stage.RELEASE_PHASE: "running the predeploy and release commands",
        Stage.RELEASING: "making the release",
        Stage.ROLLING_OUT: "starting the new release's instances",
        Stage.LIVE: "live",
        Stage.FAILED: "failed",
        Stage.ROLLED_BACK: "failed to start; the previous release keeps serving",
        Stage.CANCELLED: "cancelled",
    }[stage]


def outcome(status: str, error: str, release: int | None) -> str:
    """The line a user reads when a deploy ended (`roost deploy`, `git push`),
    or what it is doing while it runs."""
    stage = stage_of(status)
    if stage is Stage.LIVE:
        return f"v{release} is live" if release else "live"
    if stage is Stage.ROLLED_BACK:
        return f"rolled back: {error}" if error else "rolled back"
    if stage is Stage.FAILED:
        return f"failed: {error}" if error else "failed"
    if stage is Stage.CANCELLED:
        return error or "cancelled"  # "cancelled by ann@example.com"
    return describe(stage)


# ---------------------------------------------------------------- one app's deploys in order


@dataclass(frozen=True)
class InLine:
    """One of an app's deploys that has not ended, as the queue sees it."""

    id: str
    status: str
    created_at: float
    since: float = 0.0  # when it entered its stage (0: unknown, taken as created_at)


def _order(builds: Sequence[InLine]) -> list[InLine]:
    return sorted(builds, key=lambda b: (b.created_at, b.id))


def ahead_of(builds: Sequence[InLine], build_id: str) -> str | None:
    """The deploy `build_id` waits for: the newest of the app's deploys that
    have not ended and came before it; None when none did (it may build)."""
    line = [b for b in _order(builds) if not stage_of(b.status).final]
    ids = [b.id for b in line]
    at = ids.index(build_id) if build_id in ids else len(ids)
    return ids[at - 1] if at else None


def next_to_start(builds: Sequence[InLine]) -> str | None:
    """The queued deploy of one app that starts now: the oldest queued one,
    once none of the app's deploys is past `queued` and before its end."""
    line = [b for b in _order(builds) if not stage_of(b.status).final]
    if any(stage_of(b.status) is not Stage.QUEUED for b in line):
        return None
    return line[0].id if line else None


def cancel_move(status: str) -> Move:
    """Cancel a deploy where it is; IllegalMove once it ended."""
    return build_move(status, Event.CANCELLED)


def stalled(builds: Sequence[InLine], now: float, limits: Mapping[Stage, float]) -> list[str]:
    """The deploys in a stage for longer than its limit: the controller
    driving them stopped (nothing resumes a deploy mid-stage), and a later
    deploy of the app must not wait for them for ever. Stages without a
    limit (queued, rolling-out: the lease holder ends it) never stall."""
    out = []
    for b in builds:
        limit = limits.get(stage_of(b.status))
        if limit is not None and now - (b.since or b.created_at) > limit:
            out.append(b.id)
    return out
