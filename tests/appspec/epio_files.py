"""Real-world epio.ini files: the project's own fixtures and the corpus beside it.

`fixtures/epio/` holds small files, written for this project, that each carry
the quirks the real files showed (CRLF, merged duplicate sections, padded
cron keys, merge-conflict residue, ...): they make the suite pass from a
clone on its own. The corpus (98 files from public repositories,
../shared/epio-corpus beside the checkout, or $ROOST_EPIO_CORPUS) is checked
whenever it is there; CI (CI=true) must have it (see conftest.py).
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from roost.appspec import AppSpec, check_file
from roost.appspec.ini import parse_ini

REPO_ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "epio"
CORPUS = Path(
    os.environ.get("ROOST_EPIO_CORPUS", REPO_ROOT.parent / "shared" / "epio-corpus")
).resolve()


def corpus_present() -> bool:
    return (CORPUS / "files").is_dir()


def corpus_files() -> list[Path]:
    """Every epio.ini in the corpus. Asked for while missing: a failure."""
    files = CORPUS / "files"
    if not files.is_dir():
        raise RuntimeError(
            f"the epio.ini corpus is missing: expected {files} "
            "(../shared/epio-corpus beside the repository, or set ROOST_EPIO_CORPUS)"
        )
    return sorted(files.iterdir())


def fixture_files() -> list[Path]:
    return sorted(FIXTURES.glob("*.ini"))


def fixture(name: str) -> Path:
    path = FIXTURES / name
    assert path.is_file(), f"no fixture {path}"
    return path


def assert_checked_like_epio(
    path: Path,
    unparseable: dict[str, tuple[int, str]],
    not_deployable: dict[str, tuple[int, str]],
) -> None:
    """What every epio.ini must get: parsed as ConfigParser would and mapped to
    a spec, or refused at the line that is wrong with words that say why."""
    report = check_file(path)
    if path.name in unparseable:
        line, words = unparseable[path.name]
        assert report.spec is None
        assert [(p.file, p.line) for p in report.errors] == [(path.name, line)]
        assert words in report.errors[0].message
        return
    parse_ini(path.read_bytes(), path.name)
    assert report.spec is not None, report.errors
    if path.name in not_deployable:
        line, words = not_deployable[path.name]
        assert [(p.file, p.line) for p in report.errors] == [(path.name, line)]
        assert words in report.errors[0].message
    else:
        assert report.errors == []
        assert report.ok
    # Warnings always say where.
    assert all(w.file == path.name for w in report.warnings)
    # The spec travels over the wire: it must survive msgpack unchanged.
    wire = msgspec.msgpack.encode(report.spec)
    assert msgspec.msgpack.decode(wire, type=AppSpec) == report.spec
