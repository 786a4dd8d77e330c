"""Small pure converters for config values: booleans, numbers, paths, URL prefixes.

Each returns None (or an error string) instead of raising, so callers can
report the problem with the file and line they know.
"""

from __future__ import annotations

import keyword
import posixpath
import re
from typing import Literal

Root = Literal["app", "data", "admin_media", "site_packages"]

# py2 RawConfigParser._boolean_states: what getboolean() accepted, any case.
_BOOLEANS = {
    "1": True,
    "yes": True,
    "true": True,
    "on": True,
    "0": False,
    "no": False,
    "false": False,
    "off": False,
}

# Ways epio.ini configs name the data directory and Django's admin media. They
# are all the same places on ep.io's layout (app/, data/, shortcuts/ side by side).
_DATA_PREFIXES = ("%(data_directory)s", "../data", "~/data")
_ADMIN_PREFIXES = ("%(django_admin_media)s", "../shortcuts/django-admin-media")
_SITE_PACKAGES = re.compile(r"^\.\./pyenv/lib/python[0-9.]*/site-packages(?=/|$)")
# Inside site-packages: Django's admin static files (>= 1.4) and media (<= 1.3).
_ADMIN_IN_SITE = re.compile(r"^django/contrib/admin/(static/admin|media)(?=/|$)")


def parse_bool(text: str) -> bool | None:
    return _BOOLEANS.get(text.lower())


def parse_int(text: str) -> int | None:
    """A non-negative decimal integer, or None."""
    if text.isascii() and text.isdigit():
        return int(text)
    return None


def rel_path(text: str) -> str | None:
    """A path normalised relative to the app checkout, or None if it leaves it.

    "./web/" -> "web", "." -> ".", "" -> "."; absolute or "../x" -> None. A path
    still holding an ep.io variable (`%(data_directory)s/x`) is not in the app.
    """
    if text.startswith("/") or "\0" in text or "%(" in text:
        return None
    norm = posixpath.normpath(text) if text else "."
    if norm == ".." or norm.startswith("../"):
        return None
    return norm


def url_prefix(text: str) -> str:
    """ "/static/" -> "/static"; "static" -> "/static"; "/" stays "/"."""
    collapsed = re.sub(r"/{2,}", "/", "/" + text.strip("/"))
    return collapsed


def _strip_prefix(value: str, prefixes: tuple[str, ...]) -> str | None:
    for prefix in prefixes:
        if value == prefix or value.startswith(prefix + "/"):
            return value[len(prefix) :]
    return None


def _sub_path(rest: str) -> str | None:
    rest = rest.strip("/")
    if not rest:
        return ""
    norm = posixpath.normpath(rest)
    if norm == ".." or norm.startswith("../"):
        return None
    return "" if norm == "." else norm


def locate(value: str) -> tuple[Root, str] | str:
    """Where a [static] or [symlinks] target points: (root, path) or an error message.

    `path` is relative to `root` (see `model.StaticMapping`); "" is the root
    itself, except for "app" where the checkout itself is ".".
    """
    rest = _strip_prefix(value, _DATA_PREFIXES)
    if rest is not None:
        sub = _sub_path(rest)
        return ("data", sub) if sub is not None else f"{value!r} leaves the data directory"
    rest = _strip_prefix(value, _ADMIN_PREFIXES)
    if rest is not None:
        sub = _sub_path(rest)
        return ("admin_media", sub) if sub is not None else f"{value!r} leaves the admin media"
    m = _SITE_PACKAGES.match(value)
    if m:
        sub = _sub_path(value[m.end() :])
        if sub is None:
            return f"{value!r} leaves site-packages"
        admin = _ADMIN_IN_SITE.match(sub)
        if admin:
            return ("admin_media", sub[admin.end() :].strip("/"))
        return ("site_packages", sub)
    if "%(" in value:
        return f"{value!r}: only %(data_directory)s and %(django_admin_media)s can start a path"
    path = rel_path(value)
    if path is None:
        return (
            f"{value!r} is outside the app; only the app, ../data (%(data_directory)s) "
            "and the Django admin media can be used"
        )
    return ("app", path)


def dotted_name(text: str) -> bool:
    """A Python module path such as `pkg.module`."""
    parts = text.split(".")
    return all(p.isidentifier() and not keyword.iskeyword(p) for p in parts)


def looks_like_env_var(name: str) -> bool:
    """DJANGO_SETTINGS_MODULE, IN_PRODUCTION: an environment variable's usual shape."""
    return re.fullmatch(r"[A-Z][A-Z0-9]*(_[A-Z0-9]+)+|[A-Z]{2,}", name) is not None
