"""An image made ready for an app's instances on this host: fetched and
unpacked (pinned), its data directory linked, its interpreter checked.

Split from the supervisor so that its loop only posts the outcome: the
event `prepare` returns (ImageReady, or ImageFailed with the reason, the
pin released again).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from roost.images.digest import ImageError
from roost.runner.layout import link_data
from roost.runner.model import ImageFailed, ImageReady
from roost.wire.rpc import RemoteError, RpcTimeout

log = logging.getLogger("roost.runner")


class ImageProvider(Protocol):
    """Unpacked images by digest (the daemon's wraps `roost.images`)."""

    async def ensure(self, app: str, digest: str) -> Path:
        """The unpacked image root (`<checkout_name>/`, `venv/`, `roost-image.json`).

        The image is pinned (kept from eviction) until `release(digest)`; each
        successful `ensure` is balanced by one `release`.
        """
        ...

    def release(self, digest: str) -> None: ...


async def prepare(
    provider: ImageProvider,
    app: str,
    digest: str,
    data_directory: Path,
    check_interpreter: Callable[[Path], Awaitable[str | None]],
) -> ImageReady | ImageFailed:
    try:
        root = await provider.ensure(app, digest)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        if isinstance(exc, ImageError | OSError | RpcTimeout | RemoteError):
            log.warning("fetching image %s failed: %s", digest, exc)
        else:  # a bug, not a network or disk problem: keep the traceback
            log.exception("fetching image %s failed", digest)
        return ImageFailed(digest, f"{type(exc).__name__}: {exc}")
    try:
        # Images are per-app, so the link cannot point at another app's
        # data. No await between check and replace: atomic in the runner's
        # loop, and one runner owns DATA/runner.
        link_data(root, data_directory)
    except (OSError, RuntimeError) as exc:
        provider.release(digest)
        return ImageFailed(digest, f"cannot link the data directory: {exc}")
    problem = await check_interpreter(root)
    if problem:
        provider.release(digest)
        return ImageFailed(digest, problem, unusable=True)
    return ImageReady(digest, root)
