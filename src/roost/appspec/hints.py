"""Hints for keys and sections Roost does not know: what the user probably meant.

The commonest cause in real epio.ini files is a section header that was
commented out (the skeleton ships them commented), so the keys below it land
in the section above; the next commonest are typos and Python 2
ConfigParser's reading of `web:app` as key `web` with value `app`.
"""

from __future__ import annotations

import difflib

from roost.appspec.ini import IniDocument, IniOption
from roost.appspec.values import dotted_name, looks_like_env_var

# Keys each ep.io section understands (free-form sections list their options).
SECTION_KEYS: dict[str, tuple[str, ...]] = {
    "wsgi": ("requirements", "entrypoint", "enabled", "pythonpath", "python_version", "async_type"),
    "django": ("base", "append_settings"),
    "checkout": ("directory_name",),
    "http": ("gzip",),
    "redis": ("memory",),
    "celery": ("djcelery", "base", "append_settings"),
    "solr": ("schema_file", "memory"),
    "services": ("postgres", "redis", "s3"),
    "static": ("_directory_indexes",),
    "basic_auth": ("_realm",),
    "env": (),
    "symlinks": (),
    "cron": (),
    "process-NAME": ("command", "cwd"),
}
KNOWN_SECTIONS = tuple(s for s in SECTION_KEYS if s != "process-NAME")


def _entrypoint_from_colon(section: str, option: IniOption) -> str:
    """`web:app` under [wsgi] became key 'web', value 'app'; rebuild what was meant."""
    if section != "wsgi" or option.delimiter != ":" or option.name in SECTION_KEYS["wsgi"]:
        return ""
    module, _, attr = f"{option.name}:{option.value}".partition(":")
    if dotted_name(module) and dotted_name(attr):
        return (
            f"'{module}:{attr}' is read as key {module!r} with value {attr!r} because ':' "
            f"also separates keys from values; write: entrypoint = {module}:{attr}"
        )
    return ""


def _belongs_elsewhere(section: str, name: str) -> str:
    homes = [s for s, keys in SECTION_KEYS.items() if s != section and name in keys]
    if homes:
        return f"{name!r} is a key of " + " or ".join(f"[{s}]" for s in homes)
    # django_base -> [django] base
    head, _, tail = name.partition("_")
    if tail and tail in SECTION_KEYS.get(head, ()):
        return f"did you mean {tail!r} in [{head}]?"
    if section != "env" and looks_like_env_var(name):
        return f"{name!r} looks like an environment variable; those go in [env]"
    return ""


def commented_header_hint(doc: IniDocument, section: str, option: IniOption) -> str:
    """Explain a key that sits under a header the user commented out."""
    start = doc.header_before(section, option.line)
    for lineno, header in reversed(doc.commented_headers(start, option.line)):
        if header != section:
            return (
                f"the header '[{header}]' on line {lineno} is commented out, "
                f"so this line is read as part of [{section}]"
            )
    return ""


def key_hint(doc: IniDocument, section: str, option: IniOption, known: tuple[str, ...] = ()) -> str:
    """Everything useful to say about an unknown or misplaced key."""
    parts: list[str] = []
    colon = _entrypoint_from_colon(section, option)
    if colon:
        return colon
    close = difflib.get_close_matches(option.name, known, n=1, cutoff=0.75)
    if close:
        parts.append(f"did you mean {close[0]!r}?")
    else:
        elsewhere = _belongs_elsewhere(section, option.name)
        if elsewhere:
            parts.append(elsewhere)
    header = commented_header_hint(doc, section, option)
    if header:
        parts.append(header)
    return "; ".join(parts)


def misplaced(section: str, name: str) -> bool:
    """A key in a free-form section that surely belongs to another section."""
    return bool(_belongs_elsewhere(section, name)) and "/" not in name


def section_hint(name: str) -> str:
    if name.lower() in KNOWN_SECTIONS:
        return f"section names are case-sensitive: write [{name.lower()}]"
    if name.strip() in KNOWN_SECTIONS or name.strip().startswith("process-"):
        return f"remove the spaces inside the brackets: [{name.strip()}]"
    if name.startswith("process") and not name.startswith("process-"):
        return "a custom process is written [process-NAME], e.g. [process-worker]"
    close = difflib.get_close_matches(name, KNOWN_SECTIONS, n=1, cutoff=0.75)
    if close:
        return f"did you mean [{close[0]}]?"
    return ""
