"""The collect-static step's own data: what the app's [static] mappings ask
the collection script (static_script.py, run as the build user) to gather,
and the routes it reports back, read as untrusted output."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

from roost.appspec import AppSpec
from roost.builder.errors import BuildError
from roost.wire.messages import StaticRoute


def static_mappings(
    spec: AppSpec, checkout: Path, site_packages: Path, log: Callable[[str], None]
) -> list[dict[str, Any]]:
    """Each bundled [static] mapping as the script takes it (data-directory
    ones are served from the data directory and not bundled: said in `log`)."""
    mappings = []
    admin = site_packages / "django" / "contrib" / "admin" / "static" / "admin"
    for m in spec.static:
        path = m.path.strip("/")
        if m.root == "data":
            log(f"       {m.url_prefix}: served from the data directory, not bundled")
            continue
        base = {"app": checkout, "site_packages": site_packages}.get(m.root, admin)
        mappings.append({
            "url_prefix": m.url_prefix,
            "source": str(base / path) if path else str(base),
            "allowed_root": str(base),
            "bundle_path": f"{m.root}/{path}" if path else m.root,
            "is_file": m.is_file,
        })  # fmt: skip
    return mappings


class _Route(msgspec.Struct):
    url_prefix: str
    path: str
    is_file: bool = False


class _Routes(msgspec.Struct):
    routes: list[_Route]


def read_routes(raw: str, directory_indexes: bool) -> list[StaticRoute]:
    """The routes the script wrote (the app's code ran: untrusted), keeping
    only those that start at / and do not climb out of the bundle."""
    try:
        routes = msgspec.json.decode(raw, type=_Routes).routes
    except msgspec.DecodeError as exc:
        raise BuildError(f"static collection wrote bad routes: {exc}") from None
    return [
        StaticRoute(
            url_prefix=r.url_prefix, path=r.path, is_file=r.is_file,
            directory_indexes=directory_indexes,
        )
        for r in routes
        if r.url_prefix.startswith("/") and ".." not in r.path.split("/")
    ]  # fmt: skip
