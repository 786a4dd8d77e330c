"""Every real epio.ini in the corpus (../shared/epio-corpus): parsed, mapped,
and what fails says where. Collected whenever the corpus is there; the quirks
it taught us are tested on the project's own files (test_epio_quirks.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from .epio_files import assert_checked_like_epio, corpus_files

FILES = corpus_files()

# The one file ConfigParser itself cannot read.
UNPARSEABLE = {"joskid__django.org.tr.ini": (13, "merge-conflict")}
# Files that parse but ask for something Roost cannot do: (line, words in the error).
NOT_DEPLOYABLE = {
    "pudo-attic__eutr.ini": (7, "solr"),
    "rcrowley__nomblr.ini": (13, "solr"),
    "ajford__RGVRSEF.ini": (5, "more than one ':'"),
    "paimoe__fuelwatch.ini": (2, "not a Python name"),
}


def test_the_corpus_is_all_there() -> None:
    assert len(FILES) >= 98
    assert set(UNPARSEABLE) | set(NOT_DEPLOYABLE) <= {f.name for f in FILES}


@pytest.mark.parametrize("path", FILES, ids=[f.name for f in FILES])
def test_every_corpus_file(path: Path) -> None:
    assert_checked_like_epio(path, UNPARSEABLE, NOT_DEPLOYABLE)
