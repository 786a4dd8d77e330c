"""`roost scale`'s argument: TYPE=COUNT, TYPE=COUNT:SIZE, TYPE=:SIZE."""

from __future__ import annotations

import pytest

from roost.cli.manage import parse_scale


def test_counts_and_sizes() -> None:
    assert parse_scale("web=3") == ("web", 3, None)
    assert parse_scale("web=2:512M") == ("web", 2, 512)
    assert parse_scale("web=2:512") == ("web", 2, 512)
    assert parse_scale("worker=:1G") == ("worker", None, 1024)
    assert parse_scale("worker=1:2gb") == ("worker", 1, 2048)
    assert parse_scale("web=0:768MiB") == ("web", 0, 768)


@pytest.mark.parametrize(
    "bad", ["web", "web=", "=3", "web=x", "web=2:", "web=2:lots", "web=2:5T", "web=-1"]
)
def test_bad_arguments_say_what_is_expected(bad: str) -> None:
    with pytest.raises(ValueError, match=r"expected TYPE=COUNT|is not like"):
        parse_scale(bad)
