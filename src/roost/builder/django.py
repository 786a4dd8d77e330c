"""Django support as ep.io had it: find the settings, append Roost's settings.

Pure reading of the checkout; `append_settings` writes to it, and runs only
before any of the upload's code has run (the files are still what was
uploaded, so writing to them as the builder is safe).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from roost.appspec.django_settings import render as render_django_settings
from roost.appspec.model import AppSpec
from roost.builder.errors import BuildError

_MANAGE = re.compile(r"""DJANGO_SETTINGS_MODULE['"]\s*,\s*['"]([\w.]+)['"]""")

# The appended block is shared with the servicehost's tests: one renderer.
APPENDED = render_django_settings()


@dataclass(frozen=True)
class DjangoPlan:
    base: str  # directory (relative to the checkout) put on sys.path
    settings_module: str
    explicit: bool  # declared with [django] (vs detected from manage.py)


def settings_from_manage(base_dir: Path) -> str | None:
    manage = base_dir / "manage.py"
    if not manage.is_file():
        return None
    m = _MANAGE.search(manage.read_text(encoding="utf-8", errors="replace"))
    return m.group(1) if m else None


def plan(checkout: Path, spec: AppSpec) -> DjangoPlan | None:
    """What Django the app declares ([django]) or evidently is (manage.py)."""
    if spec.django is not None:
        base = spec.django.base or "."
        module = spec.django.settings_module or settings_from_manage(checkout / base) or "settings"
        return DjangoPlan(base=base, settings_module=module, explicit=True)
    found = settings_from_manage(checkout)
    if found is not None:
        return DjangoPlan(base=".", settings_module=found, explicit=False)
    return None


def settings_file(checkout: Path, p: DjangoPlan) -> Path:
    rel = Path(*p.settings_module.split("."))
    base = checkout / p.base
    for cand in (base / rel.with_suffix(".py"), base / rel / "__init__.py"):
        if cand.is_file():
            return cand
    raise BuildError(
        f"[django] settings module {p.settings_module!r} not found under {p.base!r} "
        "(set [django] settings_module, or check [django] base)"
    )


def append_settings(checkout: Path, p: DjangoPlan) -> Path:
    path = settings_file(checkout, p)
    if path.is_symlink():
        raise BuildError(f"Django settings file {path.name} is a symlink; cannot append settings")
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(APPENDED)
    return path
