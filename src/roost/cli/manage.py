"""User and operator commands beyond deploy: config, scale, releases, domains,
certificates, keys, accounts, hosts and the "where" query."""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

import click
from rich import box
from rich.console import Console
from rich.table import Table

from roost.cli.apps import app_name_for
from roost.cli.client import (
    EXIT_USAGE,
    Api,
    CliError,
    check_transport,
    credentials_path,
    resolve,
)

console = Console()

app_option = click.option("--app", "app_name", help="app name (default: .roost-app / .epio-app)")
json_option = click.option("--json", "as_json", is_flag=True, help="machine-readable output")


def _api(ctx: click.Context) -> Any:
    return resolve(ctx.obj["data"])


def _app(app_name: str | None) -> str:
    return app_name_for(Path("."), app_name)


def _out(data: Any, as_json: bool, render: Any) -> None:
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        render(data)


def _table(columns: list[str], rows: list[list[Any]]) -> None:
    table = Table(*columns)
    for r in rows:
        table.add_row(*[str(x) for x in r])
    console.print(table)


# ------------------------------------------------------------ login and accounts


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str) -> int:
    """Seconds in '90m', '12h', '30d', '2w' (or plain seconds)."""
    t = text.strip().lower()
    unit = DURATION_UNITS.get(t[-1:], 0) if t else 0
    number = t[:-1] if unit else t
    if not number.isdigit() or int(number) == 0:
        raise CliError(f"invalid duration {text!r}: use e.g. 90m, 12h, 30d, 2w", EXIT_USAGE)
    return int(number) * (unit or 1)


@click.command("login")
@click.option("--email", prompt=True)
@click.option("--password", prompt=True, hide_input=True)
@click.option(
    "--api", "api_url", envvar="ROOST_API", help="API address (default: the local platform's)"
)
@click.option(
    "--ca",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    envvar="ROOST_API_CA",
    help="PEM certificate to trust for the API (a controller's DATA/controller/tls/api.pem)",
)
@click.option("--expires-in", help="the token's lifetime, e.g. 12h, 30d (default: until revoked)")
@click.pass_context
def login(
    ctx: click.Context,
    email: str,
    password: str,
    api_url: str | None,
    ca: Path | None,
    expires_in: str | None,
) -> None:
    """Log in and save a token for this machine (~/.config/roost/credentials.json)."""
    api = resolve(ctx.obj["data"]) if not api_url else None
    url = api_url or (api.url if api else "")
    ca_file = str(ca.resolve()) if ca else (api.ca if api else "")
    lifetime = parse_duration(expires_in) if expires_in else None
    check_transport(url, "password")
    client = Api(url, "", ca_file)
    body: dict[str, Any] = {"email": email, "password": password}
    if lifetime is not None:
        body["expires_in"] = lifetime
    data = client.request("POST", "/api/login", json=body)
    path = credentials_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    saved = {"url": url, "token": data["token"]}
    if ca_file:
        saved["ca"] = ca_file
    with os.fdopen(fd, "w") as fh:
        json.dump(saved, fh)
    until = ""
    if data.get("expires_at"):
        until = time.strftime(" (expires %Y-%m-%d %H:%M)", time.localtime(data["expires_at"]))
    console.print(f"Logged in as {data['email']}; token saved to {path}{until}")


@click.group("accounts")
def accounts() -> None:
    """Operator: manage accounts."""


@accounts.command("add")
@click.argument("email")
@click.option("--password-stdin", is_flag=True, help="read the password from standard input")
@click.option("--admin", is_flag=True)
@click.pass_context
def accounts_add(ctx: click.Context, email: str, password_stdin: bool, admin: bool) -> None:
    """Create an account (the local admin token is used)."""
    if password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = click.prompt("password", hide_input=True, confirmation_prompt=True)
    _api(ctx).request(
        "POST", "/api/accounts", json={"email": email, "password": password, "admin": admin}
    )
    console.print(f"Created account {email}")


# ------------------------------------------------------------ config


@click.group("config", invoke_without_command=True)
@app_option
@json_option
@click.pass_context
def config(ctx: click.Context, app_name: str | None, as_json: bool) -> None:
    """Show config vars (subcommands: set, unset)."""
    ctx.obj["app"] = app_name
    if ctx.invoked_subcommand is None:
        data = _api(ctx).request("GET", f"/api/apps/{_app(app_name)}/config")
        _out(
            data, as_json, lambda d: click.echo("\n".join(f"{k}={v}" for k, v in sorted(d.items())))
        )


def _patch_config(ctx: click.Context, app_name: str | None, changes: dict[str, str | None]) -> None:
    name = _app(app_name or ctx.obj.get("app"))
    data = _api(ctx).request("PATCH", f"/api/apps/{name}/config", json={"vars": changes})
    rel = data.get("release")
    console.print(f"Config updated{f'; rolling out v{rel}' if rel else ''}")


@config.command("set")
@click.argument("pairs", nargs=-1, required=True)
@app_option
@click.pass_context
def config_set(ctx: click.Context, pairs: tuple[str, ...], app_name: str | None) -> None:
    """Set KEY=VALUE config vars (a new release)."""
    changes: dict[str, str | None] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"expected KEY=VALUE, got {pair!r}", EXIT_USAGE)
        changes[key] = value
    _patch_config(ctx, app_name, changes)


@config.command("unset")
@click.argument("keys", nargs=-1, required=True)
@app_option
@click.pass_context
def config_unset(ctx: click.Context, keys: tuple[str, ...], app_name: str | None) -> None:
    """Remove config vars (a new release)."""
    _patch_config(ctx, app_name, dict.fromkeys(keys))


# ------------------------------------------------------------ formation and lifecycle


@click.command("scale")
@click.argument("pairs", nargs=-1, required=True)
@app_option
@json_option
@click.pass_context
def scale(ctx: click.Context, pairs: tuple[str, ...], app_name: str | None, as_json: bool) -> None:
    """Set instance counts and sizes: roost scale web=3 worker=1, web=2:512M, worker=:1G"""
    quantities: dict[str, int] = {}
    sizes: dict[str, int] = {}
    for pair in pairs:
        try:
            ptype, qty, size = parse_scale(pair)
        except ValueError as exc:
            raise CliError(str(exc), EXIT_USAGE) from None
        if qty is not None:
            quantities[ptype] = qty
        if size is not None:
            sizes[ptype] = size
    data = _api(ctx).request(
        "PATCH",
        f"/api/apps/{_app(app_name)}/formation",
        json={"quantities": quantities, "sizes": sizes},
    )
    _out(
        data,
        as_json,
        lambda d: console.print("Formation: " + " ".join(f"{k}={v}" for k, v in sorted(d.items()))),
    )


_SIZE = re.compile(r"(\d+)\s*([mg]i?b?)?", re.IGNORECASE)


def parse_scale(pair: str) -> tuple[str, int | None, int | None]:
    """`TYPE=COUNT[:SIZE]` or `TYPE=:SIZE` -> (type, count, size in MB); SIZE as
    512, 512M, 512MB, 1G, 1GB (MB when no unit). A clear ValueError otherwise."""
    ptype, sep, rest = pair.partition("=")
    qty_text, colon, size_text = rest.partition(":")
    usage = f"expected TYPE=COUNT, TYPE=COUNT:SIZE or TYPE=:SIZE (e.g. web=2:512M), got {pair!r}"
    if not sep or not ptype or (not qty_text and not colon) or (colon and not size_text):
        raise ValueError(usage)
    if qty_text and not qty_text.isdigit():
        raise ValueError(usage)
    size = None
    if colon:
        m = _SIZE.fullmatch(size_text.strip())
        if m is None:
            raise ValueError(f"{pair!r}: size {size_text!r} is not like 512M or 1G")
        size = int(m.group(1)) * (1024 if (m.group(2) or "m").lower().startswith("g") else 1)
    return ptype, int(qty_text) if qty_text else None, size


@click.command("restart")
@click.argument("process", required=False)
@app_option
@click.pass_context
def restart(ctx: click.Context, process: str | None, app_name: str | None) -> None:
    """Restart an app's instances (all, or one process type)."""
    _api(ctx).request("POST", f"/api/apps/{_app(app_name)}/restart", json={"process": process})
    console.print(f"Restarting {process or 'all processes'}")


@click.command("rollback")
@click.argument("version", required=False, type=int)
@app_option
@click.pass_context
def rollback(ctx: click.Context, version: int | None, app_name: str | None) -> None:
    """Roll back to VERSION (default: the previous release)."""
    data = _api(ctx).request(
        "POST", f"/api/apps/{_app(app_name)}/rollback", json={"version": version}
    )
    console.print(f"Rolling back to v{data['from']} as v{data['release']}")


@click.command("suspend")
@app_option
@click.pass_context
def suspend(ctx: click.Context, app_name: str | None) -> None:
    """Stop an app's instances; visitors get a maintenance page."""
    _api(ctx).request("POST", f"/api/apps/{_app(app_name)}/suspend")
    console.print("Suspended")


@click.command("resume")
@app_option
@click.pass_context
def resume(ctx: click.Context, app_name: str | None) -> None:
    """Start a suspended app again."""
    _api(ctx).request("POST", f"/api/apps/{_app(app_name)}/resume")
    console.print("Resumed")


# ------------------------------------------------------------ domains and certificates


@click.group("domains")
def domains() -> None:
    """Custom domains of an app."""


@domains.command("list")
@app_option
@json_option
@click.pass_context
def domains_list(ctx: click.Context, app_name: str | None, as_json: bool) -> None:
    data = _api(ctx).request("GET", f"/api/apps/{_app(app_name)}/domains")
    _out(data, as_json, lambda d: click.echo("\n".join(d)))


@domains.command("add")
@click.argument("hostname")
@app_option
@click.pass_context
def domains_add(ctx: click.Context, hostname: str, app_name: str | None) -> None:
    _api(ctx).request("POST", f"/api/apps/{_app(app_name)}/domains", json={"hostname": hostname})
    console.print(f"Added {hostname}")


@domains.command("remove")
@click.argument("hostname")
@app_option
@click.pass_context
def domains_remove(ctx: click.Context, hostname: str, app_name: str | None) -> None:
    _api(ctx).request("DELETE", f"/api/apps/{_app(app_name)}/domains/{hostname}")
    console.print(f"Removed {hostname}")


@click.group("certs", invoke_without_command=True)
@app_option
@json_option
@click.pass_context
def certs(ctx: click.Context, app_name: str | None, as_json: bool) -> None:
    """TLS certificates for custom domains: with no command, list them and their state."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(certs_list, app_name=app_name, as_json=as_json)


def _when(ts: float | None, now: float) -> str:
    if ts is None:
        return "-"
    left = ts - now
    if abs(left) >= 3 * 86400:
        return time.strftime("%Y-%m-%d", time.gmtime(ts))
    span = f"{abs(left) / 3600:.1f} h" if abs(left) >= 3600 else f"{abs(left) / 60:.0f} min"
    return f"in {span}" if left >= 0 else f"{span} ago"


def _render_certs(rows: list[dict[str, Any]]) -> None:
    if not rows:
        console.print("No custom domains")
        return
    now = time.time()
    # No vertical rules: seven columns of whole names fit 80 columns.
    table = Table(
        "app", "domain", "source", "state", "why", "expires", "next try",
        box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True, show_edge=False,
    )  # fmt: skip
    for col in table.columns:
        col.no_wrap = True
    for r in rows:
        table.add_row(
            r["app"], r["hostname"], r["source"], r["state"] or "-", r["reason"] or "-",
            _when(r["not_after"], now),
            _when(r["next_at"], now) if r["source"] == "acme" else "-",
        )  # fmt: skip
    console.print(table)
    # The CA's own words, whole, under the table: too long for a column.
    for r in rows:
        if r["reason"]:
            console.print(f"{r['hostname']}: {r['reason']}: {r['detail']}", highlight=False)


@certs.command("list")
@app_option
@json_option
@click.pass_context
def certs_list(ctx: click.Context, app_name: str | None, as_json: bool) -> None:
    """Custom domains, where their certificates come from, and ACME's state and last failure."""
    rows = _api(ctx).request("GET", "/api/certs")
    if app_name is not None:
        rows = [r for r in rows if r["app"] == app_name]
    _out(rows, as_json, _render_certs)


@certs.command("renew")
@click.argument("hostname")
@app_option
@click.pass_context
def certs_renew(ctx: click.Context, hostname: str, app_name: str | None) -> None:
    """Order a new ACME certificate for HOSTNAME now."""
    _api(ctx).request("POST", f"/api/apps/{_app(app_name)}/certs/{hostname}/renew")
    console.print(f"Renewing the certificate of {hostname}: see 'roost certs'")


@certs.command("add")
@click.argument("hostname")
@click.argument("cert_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.argument("key_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@app_option
@click.pass_context
def certs_add(
    ctx: click.Context, hostname: str, cert_file: Path, key_file: Path, app_name: str | None
) -> None:
    """Add a PEM certificate (chain) and its key for HOSTNAME."""
    body = {
        "hostname": hostname,
        "certificate": cert_file.read_text(),
        "private_key": key_file.read_text(),
    }
    data = _api(ctx).request("POST", f"/api/apps/{_app(app_name)}/certs", json=body)
    console.print(f"Certificate for {data['hostname']} ({data['subject']}) added")


# ------------------------------------------------------------ SSH keys


@click.group("keys")
def keys() -> None:
    """SSH public keys for git push and ssh run."""


@keys.command("add")
@click.argument(
    "path", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=False
)
@click.pass_context
def keys_add(ctx: click.Context, path: Path | None) -> None:
    """Add a public key (default ~/.ssh/id_ed25519.pub or id_rsa.pub)."""
    if path is None:
        for cand in ("id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub"):
            p = Path.home() / ".ssh" / cand
            if p.exists():
                path = p
                break
    if path is None:
        raise CliError("no public key found in ~/.ssh; pass the path of one", EXIT_USAGE)
    data = _api(ctx).request("POST", "/api/keys", json={"key": path.read_text().strip()})
    console.print(f"Added {data['fingerprint']}")


@keys.command("list")
@json_option
@click.pass_context
def keys_list(ctx: click.Context, as_json: bool) -> None:
    data = _api(ctx).request("GET", "/api/keys")
    _out(
        data,
        as_json,
        lambda d: _table(["fingerprint", "name"], [[k["fingerprint"], k["name"]] for k in d]),
    )


@keys.command("remove")
@click.argument("fingerprint")
@click.pass_context
def keys_remove(ctx: click.Context, fingerprint: str) -> None:
    _api(ctx).request("DELETE", f"/api/keys/{fingerprint}")
    console.print(f"Removed {fingerprint}")


# ------------------------------------------------------------ where (hosts: cli/hosts.py)


@click.command("where")
@click.argument("app", required=False)
@click.argument("process", required=False)
@json_option
@click.pass_context
def where(ctx: click.Context, app: str | None, process: str | None, as_json: bool) -> None:
    """Which hosts run APP's instances (optionally of one PROCESS type)."""
    params = {"process": process} if process else {}
    data = _api(ctx).request("GET", f"/api/apps/{_app(app)}/where", params=params)
    _out(
        data,
        as_json,
        lambda d: _table(
            ["process", "release", "host", "host state", "state", "port"],
            [
                [
                    r["process"],
                    f"v{r['release']}",
                    r["hostname"] or r["host_id"],
                    r["host_state"],
                    r["state"],
                    r["port"],
                ]
                for r in d
            ],
        ),
    )


COMMANDS = [
    login,
    accounts,
    config,
    scale,
    restart,
    rollback,
    suspend,
    resume,
    domains,
    certs,
    keys,
    where,
]
