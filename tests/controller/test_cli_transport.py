"""The CLI never sends a token or a password over plain HTTP to another machine
unless told to; the refusal comes before any connection is made."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from roost.cli.client import EXIT_UNREACHABLE, EXIT_USAGE, check_transport
from roost.cli.main import cli
from roost.cli.manage import parse_duration
from roost.netaddr import is_loopback


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[list[Any]]:
    """Every address the process tries to connect to; each attempt fails at once."""
    attempts: list[Any] = []

    def refuse(self: socket.socket, address: Any) -> None:
        attempts.append(address)
        raise ConnectionRefusedError("test: no network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    for var in ("ROOST_API", "ROOST_TOKEN", "ROOST_API_CA", "ROOST_DATA"):
        monkeypatch.delenv(var, raising=False)
    # --insecure sets it for the commands it runs: restored after the test.
    monkeypatch.setenv("ROOST_INSECURE", "0")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    yield attempts


def run(tmp_path: Path, *args: str, **env: str) -> Any:
    return CliRunner().invoke(cli, ["--data", str(tmp_path / "data"), *args], env=env)


def test_token_to_another_machine_over_http_is_refused(tmp_path: Path, connects: list[Any]) -> None:
    r = run(tmp_path, "apps", "list", ROOST_API="http://10.1.2.3:8000", ROOST_TOKEN="rst_secret")
    assert r.exit_code == EXIT_USAGE, r.output
    assert "refusing to send your API token over plain HTTP to 10.1.2.3" in r.output
    assert "--insecure" in r.output
    assert connects == []


def test_password_to_another_machine_over_http_is_refused(
    tmp_path: Path, connects: list[Any]
) -> None:
    r = run(
        tmp_path,
        "login",
        "--api",
        "http://roost.example.com:8000",
        "--email",
        "me@example.com",
        "--password",
        "hunter22",
    )
    assert r.exit_code == EXIT_USAGE, r.output
    assert "refusing to send your password over plain HTTP to roost.example.com" in r.output
    assert connects == []
    assert not (tmp_path / "config" / "roost" / "credentials.json").exists()


def test_told_to_it_goes(tmp_path: Path, connects: list[Any]) -> None:
    r = run(
        tmp_path,
        "--insecure",
        "apps",
        "list",
        ROOST_API="http://10.1.2.3:8000",
        ROOST_TOKEN="rst_secret",
    )
    assert r.exit_code == EXIT_UNREACHABLE, r.output
    assert [a[0] for a in connects] == ["10.1.2.3"]
    connects.clear()
    r = run(
        tmp_path,
        "apps",
        "list",
        ROOST_API="http://10.1.2.3:8000",
        ROOST_TOKEN="x",
        ROOST_INSECURE="1",
    )
    assert r.exit_code == EXIT_UNREACHABLE and [a[0] for a in connects] == ["10.1.2.3"]


def test_loopback_and_https_go(tmp_path: Path, connects: list[Any]) -> None:
    for url in ("http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000"):
        r = run(tmp_path, "apps", "list", ROOST_API=url, ROOST_TOKEN="rst_secret")
        assert r.exit_code == EXIT_UNREACHABLE, (url, r.output)
    r = run(tmp_path, "apps", "list", ROOST_API="https://10.1.2.3:8000", ROOST_TOKEN="rst_secret")
    assert r.exit_code == EXIT_UNREACHABLE, r.output
    assert {a[0] for a in connects} >= {"127.0.0.1", "::1", "10.1.2.3"}


def test_the_rule() -> None:
    check_transport("https://10.1.2.3", "token")
    check_transport("http://127.0.0.5:1", "token")
    for bad in ("http://10.1.2.3", "http://0.0.0.0:8000", "http://[fd00::2]:80", "ftp://x"):
        with pytest.raises(Exception):  # noqa: B017 - CliError, whatever the message
            check_transport(bad, "token")
    assert is_loopback("LOCALHOST.") and is_loopback("api.localhost")
    assert is_loopback("::ffff:127.0.0.1") and is_loopback("127.9.9.9")
    assert not is_loopback("0.0.0.0") and not is_loopback("localhost.example.com")


def test_durations() -> None:
    assert parse_duration("30d") == 30 * 86400
    assert parse_duration("90m") == 5400 and parse_duration("2w") == 14 * 86400
    assert parse_duration("3600") == 3600
    for bad in ("", "d", "0d", "-1d", "1y", "1.5h"):
        with pytest.raises(Exception):  # noqa: B017
            parse_duration(bad)
