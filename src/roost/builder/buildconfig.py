"""bundle_config.py for a build's code steps (the import check, collectstatic).

ep.io apps import `bundle_config` at module level, and Django settings read
it, so those steps need the module, rendered as a runner renders it for an
instance (`roost.appspec.bundle_config`) from the config vars and service
credentials the controller gave this build (roost.controller.build_env).
It is written into the build's own directory, outside the image root (never
in a layer), readable by the app's build user alone (the shared build user,
which runs uv for every app, cannot), and removed with the build.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from roost.appspec.bundle_config import BundleConfig, from_environment, render_bundle_config
from roost.builder.sandbox import BuildUser


def build_bundle_config(
    spec_env: Mapping[str, str], config_env: Mapping[str, str], data_directory: Path, app: str
) -> BundleConfig:
    """What the build's bundle_config holds: the app's [env] values, then its
    config vars and credentials (which win), as on a runner. A build has no
    release number yet: 'version' is 0."""
    return from_environment(
        {**spec_env, **config_env}, data_directory=str(data_directory), version=0, app_id=app
    )


def summary(config: BundleConfig, config_env: Mapping[str, str]) -> str:
    """The build log's line: names only, never a value."""
    services = sorted(k for k in config if k != "core")
    return f"{len(config_env)} config vars; bundle_config: " + (
        ", ".join(services) if services else "no services"
    )


def write_bundle_config(directory: Path, config: BundleConfig, user: BuildUser) -> Path:
    """Make `directory` (0700) holding bundle_config.py (0600), both the build
    user's; a fresh directory, so nothing an app left can be written through."""
    directory.mkdir(mode=0o700)
    path = directory / "bundle_config.py"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(render_bundle_config(config))
    user.chown(path)
    user.chown(directory)
    return path
