"""Gateway <-> controller: SSH identities, app access, deploys, run placement.

Part of `roost.wire.messages`, which every role imports them from.
"""

from __future__ import annotations

from roost.wire.messages.base import Msg
from roost.wire.messages.runners import InstanceAssignment

# ---------------------------------------------------------------- gateway (SSH)


class SshAuth(Msg, frozen=True, kw_only=True):
    """Who owns this SSH key? (OpenSSH SHA256 fingerprint, "SHA256:...")."""

    fingerprint: str


class SshIdentity(Msg, frozen=True, kw_only=True):
    account_id: int
    email: str


class AppAccess(Msg, frozen=True, kw_only=True):
    """May `account_id` use `app`? Ok, or Error naming why not."""

    account_id: int
    app: str


class AccountApps(Msg, frozen=True, kw_only=True):
    account_id: int


class AppNames(Msg, frozen=True, kw_only=True):
    apps: list[str] = []
    ids: dict[str, int] = {}  # each app's numeric id (its data's owner)
    data_quotas: dict[str, int] = {}  # each app's own data quota in MiB, where set


class AppGrant(Msg, frozen=True, kw_only=True):
    """The answer to AppAccess when the account may use the app: which
    incarnation of the name it is (the key of the gateway's git cache)."""

    app: str
    app_key: str
    app_id: int = 0
    # The app's own data quota in MiB (0: the platform's), for the data
    # sessions the gateway starts on the servicehost (DataStart).
    data_quota_mb: int = 0


class AppKeysRequest(Msg, frozen=True, kw_only=True):
    """Gateway -> controller: the current key of each of these app names
    (for the caches it keeps: those of deleted apps are archived)."""

    apps: list[str] = []


class AppKeys(Msg, frozen=True, kw_only=True):
    # app -> its current key; a name that is not an app now is left out.
    keys: dict[str, str] = {}


class GatewayDeploy(Msg, frozen=True, kw_only=True):
    """Build `archive` (tar.gz of a pushed commit) as `app`; idempotent per build_id."""

    account_id: int
    app: str
    build_id: str
    archive: bytes


class BuildLogRequest(Msg, frozen=True, kw_only=True):
    account_id: int
    build_id: str
    after_id: int = 0


class BuildLogChunk(Msg, frozen=True, kw_only=True):
    build_id: str
    lines: list[str] = []
    next_after: int = 0
    # The deploy's stage (roost.controller.deployflow): building, provisioning,
    # copying, releasing, rolling-out; at the end live, failed or rolled-back.
    status: str = ""
    error: str = ""
    release: int = 0
    # Once the deploy ended: whether it went live, and the line a user reads
    # ("v4 is live", "rolled back: v3 keeps serving; ...", "failed: ...").
    final: bool = False
    live: bool = False
    outcome: str = ""


class RunPlacement(Msg, frozen=True, kw_only=True):
    """Where may `account_id` run a command in `app`'s current release?"""

    account_id: int
    app: str


class RunTarget(Msg, frozen=True, kw_only=True):
    host_id: str
    endpoint: str
    public_key: str
    # The release environment: image, spec, config vars and service credentials.
    assignment: InstanceAssignment
