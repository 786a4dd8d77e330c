"""A daemon's entry imports its role, not the whole CLI (issue 21).

Every module a process imports stays resident, so `roost <role>` importing
every user command (rich, the API client, ...) cost each daemon ~30 MB of
its own memory. Checked in a fresh interpreter through `sys.modules`, as the
daemon is started: `python -m roost --data DIR <role>`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest

from roost.cli.lazy import LazyGroup, load
from roost.cli.main import COMMANDS, cli

# What no daemon needs: the CLI's user commands and their terminal toolkit.
CLI_ONLY = ("roost.cli.up", "roost.cli.apps", "roost.cli.manage", "roost.cli.cluster", "rich")

# What a role loads only when it is used: the controller Alembic for a
# migration (in a child, roost.state.migrator) and the ACME client when a
# certificate is due; a router cryptography to make its first self-signed
# certificate.
ON_DEMAND = {
    "controller": ("alembic", "mako", "acme", "josepy", "requests"),
    "router": ("cryptography",),
}

# role command -> the module its daemon runs
DAEMONS = {
    "controller": "roost.controller.daemon",
    "builder": "roost.builder.daemon",
    "runner": "roost.runner.daemon",
    "router": "roost.router.daemon",
    "servicehost": "roost.servicehost.daemon",
    "gateway": "roost.gateway.daemon",
    "backupd": "roost.backups.daemon",
}

_PROBE = """
import json, runpy, sys, importlib
sys.argv = ["roost", "--data", sys.argv[1], sys.argv[2], "--help"]
try:
    runpy.run_module("roost", run_name="__main__", alter_sys=True)
except SystemExit:
    pass
importlib.import_module(MODULE)
print(json.dumps(sorted(sys.modules)))
"""


def modules_of(role: str, tmp_path: Path) -> set[str]:
    """The modules loaded once `roost <role>` is parsed and its daemon's module imported."""
    code = _PROBE.replace("MODULE", repr(DAEMONS[role]))
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path), role],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "Run a" in out.stdout, out.stdout  # the role's own help: its command was reached
    return set(json.loads(out.stdout.splitlines()[-1]))


@pytest.mark.parametrize("role", sorted(DAEMONS))
def test_a_daemon_imports_no_cli_command_but_its_own(role: str, tmp_path: Path) -> None:
    loaded = modules_of(role, tmp_path)
    assert DAEMONS[role] in loaded
    assert "roost.cli.daemons" in loaded
    assert sorted(m for m in CLI_ONLY if m in loaded) == []
    assert sorted(m for m in ON_DEMAND.get(role, ()) if m in loaded) == []


def test_every_command_is_where_its_entry_says() -> None:
    ctx = click.Context(cli)
    names = cli.list_commands(ctx)
    assert names == sorted(COMMANDS)
    for name in names:
        cmd = cli.get_command(ctx, name)
        assert cmd is not None and cmd.name == name


def test_a_wrong_entry_says_where_it_looked() -> None:
    with pytest.raises(RuntimeError, match=r"'nope' is not at roost\.cli\.main:COMMANDS"):
        load("roost.cli.main:COMMANDS", "nope")
    group = LazyGroup(name="g", lazy={"x": "roost.cli.daemons:runner"})
    ctx = click.Context(group)
    assert group.get_command(ctx, "missing") is None
    assert group.get_command(ctx, "x") is not None
