"""epio.ini sections about files and HTTP: [static], [symlinks], [http], [basic_auth]."""

from __future__ import annotations

import posixpath

from roost.appspec.hints import SECTION_KEYS, misplaced
from roost.appspec.model import BasicAuth, HttpOptions, StaticMapping
from roost.appspec.reader import Reader
from roost.appspec.values import locate, parse_int, rel_path, url_prefix

DEFAULT_REALM = "Restricted"


def _looks_like_file(prefix: str, value: str, path: str) -> bool:
    """`/robots.txt = robots.txt`: both ends name a file. The app-directory
    loader replaces this guess with the truth when it can look."""
    last = prefix.rsplit("/", 1)[-1]
    target = posixpath.basename(path)
    return not value.endswith("/") and "." in last.strip(".") and "." in target.strip(".")


def map_static(r: Reader, lines: dict[str, int]) -> tuple[list[StaticMapping], bool]:
    sect = r.section("static")
    mappings: dict[str, StaticMapping] = {}
    indexes = False
    if sect is None:
        return [], False
    for opt in sect.options.values():
        if opt.name.startswith("_"):
            if opt.name == "_directory_indexes":
                indexes = r.boolean(sect, opt.name, False)
            else:
                r.unknown_key(sect, opt, SECTION_KEYS["static"])
            continue
        prefix = url_prefix(opt.name)
        if not opt.name.startswith("/"):
            if misplaced("static", opt.name):
                r.unknown_key(sect, opt, (), f"{opt.name!r} is not a URL path; ignored")
                continue
            r.warn(
                f"URL path {opt.name!r} does not start with '/'; serving it at {prefix!r}",
                opt.line,
                "keys in [static] are URL paths such as /static",
            )
        value = r.text(sect, opt)
        if value is None:
            continue
        if not value:
            r.error(f"{opt.name!r} has no directory to serve", opt.line, "e.g. /static = static")
            continue
        where = locate(value)
        if isinstance(where, str):
            r.error(where, opt.line)
            continue
        root, path = where
        if prefix in mappings:
            r.warn(
                f"URL path {prefix!r} is mapped again (as {opt.name!r}); this mapping replaces "
                f"the one on line {lines['static:' + prefix]}",
                opt.line,
            )
        mappings[prefix] = StaticMapping(
            url_prefix=prefix, path=path, root=root, is_file=_looks_like_file(prefix, value, path)
        )
        lines["static:" + prefix] = opt.line
    return list(mappings.values()), indexes


def map_symlinks(r: Reader, lines: dict[str, int]) -> dict[str, str]:
    sect = r.section("symlinks")
    links: dict[str, str] = {}
    if sect is None:
        return links
    for opt in sect.options.values():
        if misplaced("symlinks", opt.name):
            r.unknown_key(
                sect, opt, (), f"{opt.name!r} is not a symlink path; ignored (ep.io made a link)"
            )
            continue
        link = rel_path(opt.name)
        if link is None or link == ".":
            r.error(f"symlink {opt.name!r} must be a path inside the app", opt.line)
            continue
        value = r.text(sect, opt)
        if value is None:
            continue
        where = locate(value) if value else "the symlink has no target"
        if isinstance(where, str):
            r.error(where, opt.line)
            continue
        root, path = where
        if root == "app":
            links[link] = path
        elif root == "data":
            links[link] = "%(data_directory)s" + (f"/{path}" if path else "")
        else:
            r.error(
                f"symlink target {value!r}: links can point into the app or the data directory",
                opt.line,
            )
            continue
        lines["symlink:" + link] = opt.line
    return links


def map_http(r: Reader) -> HttpOptions:
    sect = r.section("http")
    if sect is None:
        return HttpOptions()
    gzip = r.boolean(sect, "gzip", False)
    expires: dict[str, int] = {}
    for opt in sect.options.values():
        if opt.name == "gzip":
            continue
        if not opt.name.startswith("expires-"):
            r.unknown_key(sect, opt, ("gzip", "expires-"))
            continue
        raw_prefix = opt.name[len("expires-") :]
        value = r.text(sect, opt)
        seconds = parse_int(value) if value is not None else None
        if not raw_prefix:
            r.error("expires- needs a URL path, e.g. expires-/static = 3600", opt.line)
        elif value is not None and seconds is None:
            r.error(f"{opt.name} = {value!r}: the lifetime must be whole seconds", opt.line)
        elif seconds is not None:
            if not raw_prefix.startswith("/"):
                r.warn(f"{opt.name!r}: the URL path should start with '/'", opt.line)
            expires[url_prefix(raw_prefix)] = seconds
    return HttpOptions(gzip=gzip, expires=expires)


def map_basic_auth(r: Reader) -> BasicAuth | None:
    sect = r.section("basic_auth")
    if sect is None:
        return None
    users: dict[str, str] = {}
    realm = DEFAULT_REALM
    for opt in sect.options.values():
        value = r.text(sect, opt)
        if opt.name == "_realm":
            realm = value or realm
        elif opt.name.startswith("_"):
            r.unknown_key(sect, opt, SECTION_KEYS["basic_auth"])
        elif value is not None:
            if not value:
                r.warn(f"user {opt.name!r} has an empty password", opt.line)
            users[opt.name] = value
    if not users:
        if sect.options:
            r.warn("[basic_auth] names no users, so the site is not protected", sect.line)
        return None
    return BasicAuth(users=users, realm=realm)
