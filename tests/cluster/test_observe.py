"""The observers the chaos tests judge by must be able to see a violation."""

from __future__ import annotations

from pathlib import Path

from tests.cluster.observe import (
    copy_key,
    interleaved_copies,
    max_copies_at_once,
    routed_instances,
)


def test_copy_key_is_app_type_and_index() -> None:
    assert copy_key("my-app-web-2-v13-abc123") == "my-app-web-2"
    assert copy_key("odd") == "odd"


def test_copies_used_alternately_are_caught() -> None:
    clean = ["a-web-1-v1-old", "a-web-2-v1-x", "a-web-1-v1-old", "a-web-1-v1-new", "a-web-2-v1-x"]
    assert interleaved_copies(clean) == [] and max_copies_at_once(clean) == 1
    bad = [*clean, "a-web-1-v1-old"]  # the old copy served again after the new one
    assert interleaved_copies(bad) == ["a-web-1-v1-old"] and max_copies_at_once(bad) == 2


def test_routed_instances_orders_by_request_start(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    line = (
        '10.0.0.1 - - [01/Jan/2026:00:00:00 +0000] "GET / HTTP/1.1" 200 5 "-" "-" '
        "host=a.localhost app={app} inst={inst} ms=1.0 rid={rid}\n"
    )
    log.write_text(
        line.format(app="a", inst="a-web-1-v1-new", rid="traffic-200")
        + line.format(app="a", inst="a-web-1-v1-old", rid="traffic-100")  # slow, ended later
        + line.format(app="b", inst="b-web-1-v1-x", rid="traffic-150")
        + line.format(app="a", inst="a-web-2-v1-y", rid="r-untimed")
    )
    assert routed_instances(log, "a") == ["a-web-1-v1-old", "a-web-1-v1-new"]
    assert routed_instances(tmp_path / "missing.log", "a") == []
