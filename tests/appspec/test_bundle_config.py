"""The bundle_config module ep.io apps import their credentials from."""

from __future__ import annotations

import pytest

from roost.appspec.bundle_config import (
    build_config,
    from_environment,
    postgres_from_url,
    redis_from_url,
    render_bundle_config,
)


def load(source: str) -> dict:  # type: ignore[type-arg]
    namespace: dict = {}  # type: ignore[type-arg]
    exec(compile(source, "bundle_config.py", "exec"), namespace)
    return namespace["config"]  # type: ignore[no-any-return]


def test_what_real_apps_read() -> None:
    config = from_environment(
        {
            "DATABASE_URL": "postgres://app_x:s%3Acret@10.0.0.5:6432/app_x",
            "REDIS_URL": "redis://:r3d1s@10.0.0.6:6380/2",
            "OTHER": "ignored",
        },
        data_directory="/srv/roost/apps/x/data",
        version=7,
        app_id="x",
    )
    loaded = load(render_bundle_config(config))
    assert loaded == config
    pg = loaded["postgres"]
    # Django settings in the corpus: HOST, int(PORT), USER, PASSWORD, NAME.
    assert (pg["host"], int(pg["port"]), pg["username"], pg["password"], pg["database"]) == (
        "10.0.0.5",
        6432,
        "app_x",
        "s:cret",
        "app_x",
    )
    assert "{0[host]}:{0[port]}".format(loaded["redis"]) == "10.0.0.6:6380"
    assert loaded["redis"]["password"] == "r3d1s" and loaded["redis"]["db"] == 2
    assert loaded["core"] == {
        "data_directory": "/srv/roost/apps/x/data",
        "version": 7,
        "app_id": "x",
    }


def test_services_the_app_does_not_have_are_absent() -> None:
    loaded = load(render_bundle_config(from_environment({}, data_directory="/d", version="3")))
    assert "postgres" not in loaded and "redis" not in loaded
    assert loaded["core"]["version"] == "3"


def test_defaults_for_urls_without_ports() -> None:
    assert postgres_from_url("postgresql://u@db/name")["port"] == 5432
    assert redis_from_url("redis://cache")["port"] == 6379
    assert redis_from_url("redis://cache")["password"] == ""


def test_awkward_strings_survive_rendering() -> None:
    nasty = "quote' \" back\\slash \u00e9 \n newline \x00"
    config = build_config(
        data_directory=nasty,
        version=1,
        postgres={"password": nasty, "port": 1, "x": None, "y": True},
    )
    source = render_bundle_config(config)
    assert source.startswith("# -*- coding: utf-8 -*-\n")
    assert load(source) == config


def test_only_plain_values() -> None:
    with pytest.raises(TypeError):
        render_bundle_config({"core": {"x": [1, 2]}})  # type: ignore[dict-item]
