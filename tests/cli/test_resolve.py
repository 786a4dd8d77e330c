"""Where the CLI finds the API and its token (roost.cli.client.resolve): the
local platform's DATA/api.json names the file the controller writes its
admin token to; the CLI reads it, never the state database."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from roost.cli.client import resolve
from roost.cli.local import write_api_info
from roost.controller.admintoken import write_admin_token
from roost.settings import Settings


@pytest.fixture(autouse=True)
def no_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for var in ("ROOST_API", "ROOST_TOKEN", "ROOST_API_CA"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))


def _resolved(data: Path) -> tuple[str, str]:
    """The URL and the token the CLI would use."""
    api = resolve(data)
    try:
        return api.url, api.http.headers.get("Authorization", "").removeprefix("Bearer ")
    finally:
        api.http.close()


def test_the_token_is_read_from_the_file_roost_up_named(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    write_api_info(data, Settings(api_port=8123))
    saved = json.loads((data / "api.json").read_text())
    assert "token" not in saved and saved["token_file"] == str(data / "controller/admin.token")
    # Before the controller's first start: the URL, no token yet.
    assert _resolved(data) == ("http://127.0.0.1:8123", "")
    write_admin_token(data, "rst_from-the-controller")
    assert _resolved(data)[1] == "rst_from-the-controller"


def test_the_environment_and_an_older_api_json_still_win(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "api.json").write_text(json.dumps({"url": "http://127.0.0.1:1", "token": "rst_old"}))
    assert _resolved(data)[1] == "rst_old"
    write_api_info(data, Settings(api_port=8123))
    write_admin_token(data, "rst_file")
    monkeypatch.setenv("ROOST_TOKEN", "rst_env")
    assert _resolved(data)[1] == "rst_env"
