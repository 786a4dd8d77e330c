"""`roost cluster init` and `roost cluster join`: many hosts, one cluster.

init writes a bundle (a tar.gz, secret: it holds the cluster key) with the
address book and the state database URL; join unpacks it into a host's data
directory. Every daemon of the cluster then authenticates with the cluster
key, and ZAP admits nothing else: a machine without the bundle cannot talk to
any daemon.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import click
from rich.console import Console

from roost.cli.client import EXIT_USAGE, CliError
from roost.wire.cluster import ClusterConfig, Endpoint
from roost.wire.keys import generate_keypair, load_keypair, write_keypair

console = Console()
KEY_NAME = "cluster"
ADMIN_EMAIL = "admin@localhost"
BUNDLE_FILES = ("cluster.json", f"keys/{KEY_NAME}.key", f"keys/{KEY_NAME}.key_secret")

# address-book role -> (option name, default port)
ENDPOINT_ROLES = {
    "controller": ("controllers", 7100),
    "controller-pub": ("controllers", 7101),
    "builder": ("builders", 7110),
    "images": ("builders", 7111),
    "services": ("servicehosts", 7120),
}


def _addresses(value: str, what: str) -> list[str]:
    hosts = [h.strip() for h in value.split(",") if h.strip()]
    for h in hosts:
        if any(c in h for c in " /:") and not h.startswith("["):
            raise CliError(
                f"--{what}: expected IP addresses separated by commas, got {h!r}", EXIT_USAGE
            )
    return hosts


def build_config(
    name: str,
    controllers: list[str],
    builders: list[str],
    servicehosts: list[str],
    public_key: str,
    state_url: str,
) -> ClusterConfig:
    hosts = {"controllers": controllers, "builders": builders, "servicehosts": servicehosts}
    endpoints: dict[str, list[Endpoint]] = {}
    for role, (option, port) in ENDPOINT_ROLES.items():
        eps = [Endpoint(f"tcp://{h}:{port}", public_key) for h in hosts[option]]
        if eps:
            endpoints[role] = eps
    return ClusterConfig(name=name, endpoints=endpoints, state_url=state_url)


@click.group("cluster")
def cluster() -> None:
    """Create a cluster bundle, or join a host to a cluster."""


@cluster.command("init")
@click.option("--name", default="roost", show_default=True)
@click.option("--controllers", required=True, help="controller host addresses, comma-separated")
@click.option("--builders", default="", help="builder host addresses (default: the controllers)")
@click.option("--servicehosts", default="", help="servicehost addresses")
@click.option("--state", "state_url", default="", help="state database URL (postgresql://...)")
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("roost-cluster.tar.gz"),
    show_default=True,
)
def init(
    name: str, controllers: str, builders: str, servicehosts: str, state_url: str, out: Path
) -> None:
    """Create the cluster's key and address book as a bundle for `cluster join`."""
    ctl = _addresses(controllers, "controllers")
    if not ctl:
        raise CliError("--controllers needs at least one address", EXIT_USAGE)
    if len(ctl) > 1 and (not state_url or state_url.startswith("sqlite")):
        raise CliError(
            "several controllers need a shared state database: pass --state postgresql://...",
            EXIT_USAGE,
        )
    pair = generate_keypair()
    config = build_config(
        name,
        ctl,
        _addresses(builders, "builders") or ctl,
        _addresses(servicehosts, "servicehosts"),
        pair.public_text,
        state_url,
    )
    staging = io.BytesIO()
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / f"roost-bundle-{os.getpid()}"
    try:
        write_keypair(tmp / "keys", KEY_NAME, pair)
        config.save(tmp / "cluster.json")
        with tarfile.open(fileobj=staging, mode="w:gz") as tar:
            for rel in BUNDLE_FILES:
                tar.add(tmp / rel, arcname=rel)
    finally:
        for rel in BUNDLE_FILES:
            (tmp / rel).unlink(missing_ok=True)
        for d in (tmp / "keys", tmp):
            if d.exists():
                d.rmdir()
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(staging.getvalue())
    console.print(f"Wrote {out} (keep it secret: it holds the cluster key).")
    console.print(f"On each host: roost --data DIR cluster join {out}")


@cluster.command("join")
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_context
def join(ctx: click.Context, bundle: Path) -> None:
    """Unpack BUNDLE into this host's data directory."""
    data: Path = ctx.obj["data"]
    # Searchable but not listable, as `roost up` makes it: a builder's
    # unprivileged user must reach DATA/builder; keys/ stays 0700 itself.
    data.mkdir(parents=True, exist_ok=True, mode=0o711)
    try:
        with tarfile.open(bundle, mode="r:gz") as tar:
            members = {m.name: m for m in tar.getmembers()}
            if set(members) != set(BUNDLE_FILES) or not all(m.isfile() for m in members.values()):
                raise CliError(f"{bundle} is not a Roost cluster bundle", EXIT_USAGE)
            for rel in BUNDLE_FILES:
                fh = tar.extractfile(members[rel])
                assert fh is not None
                dest = data / rel
                dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                mode = 0o600 if rel.endswith("_secret") else 0o644
                fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
                with os.fdopen(fd, "wb") as out:
                    out.write(fh.read())
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise CliError(f"cannot read {bundle}: {exc}", EXIT_USAGE) from None
    config = ClusterConfig.load(data / "cluster.json")
    load_keypair(data / "keys", KEY_NAME)
    console.print(f"Joined cluster {config.name}.")
    console.print(f"Start this host's roles with: roost --data {data} ROLE --name {KEY_NAME}")


@cluster.command("admin-token")
@click.option("--email", default=ADMIN_EMAIL, show_default=True, help="the admin account")
@click.option("--name", "token_name", default="cluster admin", show_default=True)
@click.option("--state", "state_url", default="", help="state database URL (default: the bundle's)")
@click.pass_context
def admin_token(ctx: click.Context, email: str, token_name: str, state_url: str) -> None:
    """Print a new API token of the admin account (created if missing).

    Runs on a host that joined the cluster: it connects to the cluster's state
    database, brings its schema up to date and issues the token, so operators
    (and tests) can drive any controller with ROOST_API/ROOST_TOKEN.
    """
    data: Path = ctx.obj["data"]
    path = data / "cluster.json"
    if not state_url:
        if not path.exists():
            raise CliError(f"{path} not found: run 'roost cluster join BUNDLE' first", EXIT_USAGE)
        state_url = ClusterConfig.load(path).state_url
    if not state_url:
        raise CliError(
            "the cluster has no shared state database (cluster.json state_url is empty); "
            "pass --state",
            EXIT_USAGE,
        )
    # Imported here: the state layer is heavy and only this command needs it.
    from roost.controller.bootstrap import NotAdmin, issue_admin_token

    try:
        token = issue_admin_token(state_url, email, token_name)
    except NotAdmin as exc:
        raise CliError(str(exc), EXIT_USAGE) from None
    except Exception as exc:  # driver errors: one line, no traceback
        raise CliError(f"cannot use the state database: {exc}") from None
    click.echo(token)
