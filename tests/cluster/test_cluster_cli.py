"""`roost cluster admin-token` (and join's data directory), without namespaces."""

from __future__ import annotations

import stat
from pathlib import Path

from click.testing import CliRunner

from roost.cli.main import cli
from roost.controller.store import Store
from roost.state.db import make_engine, sqlite_url


def _joined(tmp_path: Path, state: str) -> Path:
    bundle = tmp_path / "bundle.tar.gz"
    args = ["cluster", "init", "--controllers", "10.9.0.1", "--out", str(bundle)]
    r = CliRunner().invoke(cli, [*args, *(["--state", state] if state else [])])
    assert r.exit_code == 0, r.output
    data = tmp_path / "host" / "data"
    r = CliRunner().invoke(cli, ["--data", str(data), "cluster", "join", str(bundle)])
    assert r.exit_code == 0, r.output
    return data


def test_admin_token_creates_the_admin_once_and_prints_working_tokens(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "state.db")
    data = _joined(tmp_path, url)
    # Searchable, not listable: a builder's unprivileged user must reach DATA/builder.
    assert stat.S_IMODE(data.stat().st_mode) == 0o711
    tokens = []
    for _ in range(2):
        r = CliRunner().invoke(cli, ["--data", str(data), "cluster", "admin-token"])
        assert r.exit_code == 0, r.output
        tokens.append(r.output.strip())
    assert tokens[0] != tokens[1]
    store = Store(make_engine(url))
    try:
        owners = {store.account_for_token(t).id for t in tokens}
        assert len(owners) == 1
        admin = store.account_by_email("admin@localhost")
        assert admin is not None and admin.is_admin and admin.id in owners
    finally:
        store.engine.dispose()


def test_admin_token_refusals_are_one_line(tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["--data", str(tmp_path / "nowhere"), "cluster", "admin-token"])
    assert r.exit_code == 2 and "cluster join" in r.output
    data = _joined(tmp_path, "")
    r = CliRunner().invoke(cli, ["--data", str(data), "cluster", "admin-token"])
    assert r.exit_code == 2 and "--state" in r.output
    assert len(r.output.strip().splitlines()) == 1
