"""The CLI's HTTP client for the controller API, and where it finds it.

Precedence: ROOST_API / ROOST_TOKEN, then DATA/api.json written by `roost up`,
then ~/.config/roost/credentials.json written by `roost login`. api.json
names the file its token is in ("token_file": the one the controller writes
at its start, roost.controller.admintoken) rather than holding it.

A token or password goes over plain HTTP only to this machine (loopback):
anywhere else, anyone on the path could read it and act as the account.
Off loopback the controller serves HTTPS; a self-signed controller
certificate is trusted by giving its PEM file (ROOST_API_CA, or the "ca" that
`roost login --ca` saves). `--insecure` / ROOST_INSECURE=1 allows plain HTTP
to another machine (a trusted network, a tunnel the CLI cannot see).
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import click

from roost.netaddr import is_loopback

if TYPE_CHECKING:
    import httpx

# Exit codes scripts can rely on.
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_CONFLICT = 4
EXIT_AUTH = 5
EXIT_UNREACHABLE = 6


class CliError(click.ClickException):
    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code

    # click reads the exit status from this attribute.
    @property
    def exit_code(self) -> int:  # type: ignore[override]
        return self.code


def _status_code(status: int) -> int:
    return {401: EXIT_AUTH, 403: EXIT_AUTH, 404: EXIT_NOT_FOUND, 409: EXIT_CONFLICT}.get(
        status, EXIT_USAGE if status in (400, 413, 422) else EXIT_ERROR
    )


def insecure_allowed() -> bool:
    return os.environ.get("ROOST_INSECURE", "") not in ("", "0")


def check_transport(url: str, secret: str) -> None:
    """Refuse to send `secret` (a token, a password) over plain HTTP off this machine.

    Runs before any connection is made: a refusal sends nothing anywhere.
    """
    parts = urlsplit(url)
    if parts.scheme == "https":
        return
    if parts.scheme != "http" or not parts.hostname:
        raise CliError(f"API address {url!r}: expected https://HOST[:PORT]", EXIT_USAGE)
    if is_loopback(parts.hostname) or insecure_allowed():
        return
    raise CliError(
        f"refusing to send your {secret} over plain HTTP to {parts.hostname}: anyone on the "
        "network path could read it and use it. Use the API's https:// address (a controller "
        "serves HTTPS off loopback), or pass --insecure (ROOST_INSECURE=1) if you trust this "
        "network.",
        EXIT_USAGE,
    )


def trust(ca: str) -> ssl.SSLContext | bool:
    """A controller's own certificate when given (ROOST_API_CA), else the system's CAs."""
    if not ca:
        return True
    try:
        return ssl.create_default_context(cafile=ca)
    except (OSError, ssl.SSLError) as exc:
        raise CliError(f"cannot use {ca} as the API's certificate: {exc}", EXIT_USAGE) from None


class Api:
    def __init__(self, url: str, token: str, ca: str = "") -> None:
        self.url = url.rstrip("/")
        if token:
            check_transport(self.url, "API token")
        self.ca = ca
        # Here, not at the top: `roost up` imports this module (CliError) and
        # keeps what it imports for the platform's life; it never asks the API
        # through this client (3.3 MB there, issue 21).
        import httpx

        self.http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}"} if token else {},
            timeout=httpx.Timeout(30.0, read=120.0),
            verify=trust(ca),
        )

    def _unreachable(self, exc: httpx.TransportError, what: str) -> CliError:
        message = f"{what} the Roost API at {self.url}: {exc}"
        if "CERTIFICATE_VERIFY_FAILED" in str(exc) and not self.ca:
            message += (
                "\n(a controller's self-signed certificate: set ROOST_API_CA to a copy of its "
                "DATA/controller/tls/api.pem, or log in with 'roost login --ca FILE')"
            )
        return CliError(message, EXIT_UNREACHABLE)

    def _check(self, r: httpx.Response) -> httpx.Response:
        if r.status_code >= 400:
            try:
                message = r.json().get("message") or r.text
            except (ValueError, AttributeError):
                message = r.text or r.reason_phrase
            raise CliError(message, _status_code(r.status_code))
        return r

    def request(self, method: str, path: str, **kw: Any) -> Any:
        import httpx  # loaded by __init__: a lookup

        try:
            r = self.http.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise self._unreachable(exc, "cannot reach") from None
        return self._check(r).json()

    def stream_lines(self, path: str, **kw: Any) -> Iterator[dict[str, Any]]:
        import httpx  # loaded by __init__: a lookup

        try:
            with self.http.stream("GET", path, timeout=httpx.Timeout(30.0, read=None), **kw) as r:
                if r.status_code >= 400:
                    r.read()
                    self._check(r)
                for line in r.iter_lines():
                    if line.strip():
                        yield json.loads(line)
        except httpx.TransportError as exc:
            raise self._unreachable(exc, "lost") from None


def credentials_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "roost" / "credentials.json"


def _token_in(path: str) -> str:
    """The token in a file a credentials file names; "" while it does not exist."""
    try:
        return Path(path).read_text().strip() if path else ""
    except FileNotFoundError:
        return ""
    except OSError as exc:
        raise CliError(f"cannot read the API token: {exc}", EXIT_AUTH) from None


def resolve(data_dir: Path) -> Api:
    """ROOST_API/ROOST_TOKEN, else the local platform's DATA/api.json, else `roost login`'s."""
    url = os.environ.get("ROOST_API", "")
    token = os.environ.get("ROOST_TOKEN", "")
    ca = os.environ.get("ROOST_API_CA", "")
    for info in (data_dir / "api.json", credentials_path()):
        if url and token:
            break
        if info.exists():
            try:
                saved = json.loads(info.read_text())
            except ValueError:
                raise CliError(f"{info} is not valid JSON; delete it and log in again") from None
            if not url or saved.get("url", "") == url:
                ca = ca or saved.get("ca", "")
            url = url or saved.get("url", "")
            token = token or saved.get("token", "") or _token_in(saved.get("token_file", ""))
    if not url:
        raise CliError(
            f"no Roost API configured: run 'roost up' (data dir {data_dir}) "
            "or set ROOST_API and ROOST_TOKEN",
            EXIT_UNREACHABLE,
        )
    return Api(url, token, ca)
