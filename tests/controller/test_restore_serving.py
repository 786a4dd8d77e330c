"""When an app a restore suspended runs again, so the restore's answer can
say it serves (roost.controller.backups.serving_again; pure)."""

from __future__ import annotations

from roost.controller.backups import serving_again


def test_an_app_runs_again_once_every_instance_placed_for_it_is_up() -> None:
    assert not serving_again([], {}, 2)  # resumed, not placed yet
    assert not serving_again(["a", "b"], {"a": "up"}, 2)  # one not heard of yet
    assert not serving_again(["a", "b"], {"a": "up", "b": "starting"}, 2)
    assert serving_again(["a", "b"], {"a": "up", "b": "up"}, 2)


def test_an_app_that_wants_no_instance_runs_as_it_should_at_once() -> None:
    assert serving_again([], {}, 0)
