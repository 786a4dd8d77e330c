"""An app's own data quota: sizes as people write them, and what may be set
(roost.datadir.quotasize, pure)."""

from __future__ import annotations

import pytest

from roost.datadir import quota, quotasize


@pytest.mark.parametrize(
    ("text", "mb"),
    [
        ("512", 512),
        (512, 512),
        ("512M", 512),
        ("512MB", 512),
        ("2G", 2048),
        ("2g", 2048),
        ("2GiB", 2048),
        ("1.5G", 1536),
        (" 8 M ", 8),
        ("4097K", 5),  # rounded up to whole MiB
        ("1T", 1024 * 1024),
    ],
)
def test_sizes_as_people_write_them(text: str | int, mb: int) -> None:
    assert quotasize.parse_mb(text) == mb


@pytest.mark.parametrize(
    "text",
    ["", "G", "2X", "-1G", "2 G B", "1e3M", "nan", "0", "3M", "3", "17T", "2G;rm", True, 0, -8],
)
def test_what_is_not_a_quota_is_refused(text: str | int) -> None:
    with pytest.raises(quotasize.BadSize):
        quotasize.parse_mb(text)


def test_the_smallest_is_what_an_image_takes() -> None:
    assert quotasize.MIN_MB == quota.MIN_QUOTA_MB


def test_shrinking_only_down_to_what_is_stored() -> None:
    assert quotasize.refusal(100, 100 << 20) is None
    assert quotasize.refusal(1000, 0) is None
    why = quotasize.refusal(10, (10 << 20) + 1)
    assert why is not None and "remove files first" in why and "10.0 MB" in why


def test_more_room_is_raising_it() -> None:
    assert quotasize.raises(100, 200)
    assert quotasize.raises(100, 0)  # none at all: the most room
    assert not quotasize.raises(0, 200)  # a limit where there was none
    assert not quotasize.raises(200, 100)
    assert not quotasize.raises(0, 0)
    assert not quotasize.raises(100, 100)
    assert quotasize.effective(0, 64) == 64 and quotasize.effective(8, 64) == 8
