"""The CLI's HTTP client for the controller API, and where it finds it.

Precedence: ROOST_API / ROOST_TOKEN, then DATA/api.json written by `roost up`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
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


class Api:
    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.http = httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {token}"} if token else {},
            timeout=httpx.Timeout(30.0, read=120.0),
        )

    def _check(self, r: httpx.Response) -> httpx.Response:
        if r.status_code >= 400:
            try:
                message = r.json().get("message") or r.text
            except (ValueError, AttributeError):
                message = r.text or r.reason_phrase
            raise CliError(message, _status_code(r.status_code))
        return r

    def request(self, method: str, path: str, **kw: Any) -> Any:
        try:
            r = self.http.request(method, path, **kw)
        except httpx.TransportError as exc:
            raise CliError(
                f"cannot reach the Roost API at {self.url}: {exc}", EXIT_UNREACHABLE
            ) from None
        return self._check(r).json()

    def stream_lines(self, path: str, **kw: Any) -> Iterator[dict[str, Any]]:
        try:
            with self.http.stream("GET", path, timeout=httpx.Timeout(30.0, read=None), **kw) as r:
                if r.status_code >= 400:
                    r.read()
                    self._check(r)
                for line in r.iter_lines():
                    if line.strip():
                        yield json.loads(line)
        except httpx.TransportError as exc:
            raise CliError(f"lost the Roost API at {self.url}: {exc}", EXIT_UNREACHABLE) from None


def credentials_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "roost" / "credentials.json"


def resolve(data_dir: Path) -> Api:
    """ROOST_API/ROOST_TOKEN, else the local platform's DATA/api.json, else `roost login`'s."""
    url = os.environ.get("ROOST_API", "")
    token = os.environ.get("ROOST_TOKEN", "")
    for info in (data_dir / "api.json", credentials_path()):
        if url and token:
            break
        if info.exists():
            try:
                saved = json.loads(info.read_text())
            except ValueError:
                raise CliError(f"{info} is not valid JSON; delete it and log in again") from None
            url = url or saved.get("url", "")
            token = token or saved.get("token", "")
    if not url:
        raise CliError(
            f"no Roost API configured: run 'roost up' (data dir {data_dir}) "
            "or set ROOST_API and ROOST_TOKEN",
            EXIT_UNREACHABLE,
        )
    return Api(url, token)
