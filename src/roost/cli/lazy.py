"""A click group whose commands are imported only when one is asked for.

Every daemon starts as `roost <role>` (`roost up`, systemd units, the router's
supervisor), and the CLI's user commands import much a daemon never uses:
rich, the API client, every command module. Imported modules stay resident for
the life of the process, so that cost ~30 MB of unique memory in each daemon
(issue 21). Here a command is named with where it lives and imported when
invoked or asked for by help; `roost --help` still lists them all.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import click


class LazyGroup(click.Group):
    """`lazy` maps a command's name to "module:attribute"."""

    def __init__(self, *args: Any, lazy: Mapping[str, str] | None = None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.lazy: dict[str, str] = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in self.lazy and cmd_name not in self.commands:
            self.add_command(load(self.lazy[cmd_name], cmd_name), cmd_name)
        return super().get_command(ctx, cmd_name)


def load(where: str, name: str) -> click.Command:
    """The command at "module:attribute"; a wrong entry is the code's bug,
    said with the name it was registered under."""
    module, _, attr = where.partition(":")
    cmd = getattr(importlib.import_module(module), attr, None)
    if not isinstance(cmd, click.Command):
        raise RuntimeError(f"roost: command {name!r} is not at {where}")
    return cmd
