"""Controller <-> builder: builds and their environment.

Part of `roost.wire.messages`, which every role imports them from.
"""

from __future__ import annotations

from roost.appspec.model import AppSpec
from roost.wire.messages.base import Msg
from roost.wire.messages.routes import StaticRoute

# ---------------------------------------------------------------- builders


class BuildRequest(Msg, frozen=True, kw_only=True):
    build_id: str
    app: str
    # The uploaded source archive (tar.gz).
    archive: bytes
    # Digest of the previous release's lock, to reuse its dependency layer.
    previous_lock: str = ""
    # The previous release's lock text (BuildResult.lock). When the app's
    # requirements are unchanged the builder reuses this pinned resolution
    # (and so the dependency layer) instead of resolving again.
    previous_lock_text: str = ""
    # The app's numeric id: its build steps run as the app's own build user
    # (roost.tenant.identity). 0 from an older controller: the shared one.
    app_id: int = 0
    # Name a fresh dependency layer by its files (roost.builder.layerpack):
    # the controller says so once every runner reads such layers
    # (roost.images.manifest.reads_files_layers). False from an older
    # controller, or during a rolling upgrade: the layer is named by its
    # tar's sha256, once stored, as every release reads.
    layer_files: bool = False


class BuildAccepted(Msg, frozen=True, kw_only=True):
    build_id: str


class BuildLog(Msg, frozen=True, kw_only=True):
    build_id: str
    app: str
    lines: list[str]


class BuildResult(Msg, frozen=True, kw_only=True):
    build_id: str
    app: str
    ok: bool
    error: str = ""
    image_digest: str = ""
    image_size: int = 0
    static_digest: str = ""
    lock: str = ""
    spec: AppSpec | None = None
    duration_s: float = 0.0
    # sha256 of `lock` ("sha256:<hex>"): what BuildRequest.previous_lock names.
    lock_digest: str = ""
    # URL prefix -> path inside the static bundle (`static_digest`); the
    # controller copies these into AppRoute.static.
    static_routes: list[StaticRoute] = []


class BuildEnvRequest(Msg, frozen=True, kw_only=True):
    """A builder asks, once the app's configuration is read, for what the
    steps running the app's code see (the import check, collectstatic): the
    controller provisions the services `spec` declares that the app lacks
    and answers for the app of `build_id` alone, while it is building."""

    build_id: str
    spec: AppSpec


class BuildEnv(Msg, frozen=True, kw_only=True):
    """The build's environment: config vars and service credentials
    (DATABASE_URL, REDIS_URL), as an instance of the app gets them; the
    builder renders bundle_config.py from it. CURVE-encrypted on the wire."""

    build_id: str
    env: dict[str, str] = {}
