"""`roost restore --from REPOSITORY`: the command; the work is
`roost.cli.restore`'s, imported when the command runs (it brings backupd's and
the servicehost's modules, half of the CLI's start-up time, which no other
command needs)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import click

from roost.cli.client import CliError
from roost.settings import Settings


@click.command("restore")
@click.option(
    "--from", "source", required=True, metavar="REPOSITORY",
    help="the backup repository: a directory, sftp:USER@HOST:/PATH or s3:HOST/BUCKET",
)  # fmt: skip
@click.option(
    "--password-file", required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="the repository's password (backupd's keys/restic.key)",
)  # fmt: skip
@click.option(
    "--data", "data_dir", default=None, type=click.Path(file_okay=False, path_type=Path),
    help="the new, empty data directory (default: roost's --data)",
)  # fmt: skip
@click.option(
    "--ssh-key", default=None, type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="SFTP: the key the repository's host authorises",
)  # fmt: skip
@click.option("--host-key", default="", help="SFTP: the host's key to pin (SHA256:... or a line)")
@click.pass_context
def restore(
    ctx: click.Context,
    source: str,
    password_file: Path,
    data_dir: Path | None,
    ssh_key: Path | None,
    host_key: str,
) -> None:
    """Bring a whole platform back from its backups into an empty data directory."""
    from roost.backups.platformrestore import RestoreError
    from roost.cli.restore import restore_platform
    from roost.proc.exits import ConfigError, Unavailable
    from roost.servicehost.rebuild import RebuildError

    data: Path = (data_dir or ctx.obj["data"]).absolute()
    settings = Settings.from_env()
    try:
        done = asyncio.run(
            restore_platform(data, settings, source, password_file, ssh_key, host_key)
        )
    except (RestoreError, RebuildError, ConfigError, Unavailable) as exc:
        raise CliError(f"restore failed: {exc}") from None
    for line in done.lines:
        click.echo(line)
    click.echo(f"restored into {data}; now run: roost --data {data} up")
