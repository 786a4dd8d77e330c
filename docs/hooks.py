"""MkDocs hook: the manual's reference pages, generated at every build from
the code itself, so they cannot go stale.

- reference/cli.md: every `roost` command and option, walked from the click
  definitions (roost.cli.main).
- reference/api.md: every HTTP endpoint, from the OpenAPI document the
  controller publishes at /api/openapi.json (built here from the same
  FastAPI application, without serving it).

The pages exist only in the build (mkdocs `File.generated`), never in docs/.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import click
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files

HTTP_METHODS = ("get", "post", "put", "patch", "delete")
TOKEN_HEADERS = ("authorization", "x-epio-token")


# ---------------------------------------------------------------- the CLI


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", r"\|")


def _option_row(p: click.Parameter) -> str:
    names = ", ".join(f"`{o}`" for o in [*p.opts, *p.secondary_opts])
    if isinstance(p, click.Option):
        kind = "flag" if p.is_flag else _cell(p.type.name.upper())
        helptext = _cell(p.help or "")
        default = p.show_default if isinstance(p.show_default, str) else None
        plain = isinstance(p.default, (str, int, float)) and not isinstance(p.default, bool)
        if default is None and plain and p.default != "":
            default = str(p.default)  # (an unset default is click's sentinel: none shown)
        if default:
            helptext += f" (default: {_cell(default)})"
        if p.envvar:
            envs = [p.envvar] if isinstance(p.envvar, str) else list(p.envvar)
            helptext += " (env: " + ", ".join(f"`{e}`" for e in envs) + ")"
        return f"| {names} | {kind} | {helptext} |"
    return f"| {names} | {_cell(p.type.name.upper())} | |"


def _command_page(cmd: click.Command, path: list[str], out: list[str]) -> None:
    if getattr(cmd, "hidden", False):
        return
    name = " ".join(path)
    ctx = click.Context(cmd, info_name=path[-1])
    depth = min(2 + len(path) - 1, 4)
    out.append(f"{'#' * depth} `{name}`\n")
    pieces = cmd.collect_usage_pieces(ctx)
    out.append(f"```\n{name} {' '.join(pieces)}\n```\n")
    if cmd.help:
        out.append(_help_text(cmd.help) + "\n")
    arguments = [p for p in cmd.params if isinstance(p, click.Argument)]
    options = [p for p in cmd.params if isinstance(p, click.Option) and not p.hidden]
    if arguments:
        out.append(
            "Arguments: " + ", ".join(f"`{a.human_readable_name}`" for a in arguments) + "\n"
        )
    if options:
        out.append("| option | type | what it does |\n|---|---|---|")
        out.extend(_option_row(p) for p in options)
        out.append("")
    if isinstance(cmd, click.Group):
        # Through the group's own lookup: roost's commands load when asked (roost.cli.lazy).
        for sub_name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, sub_name)
            assert sub is not None, sub_name
            _command_page(sub, [*path, sub_name], out)


def _help_text(text: str) -> str:
    """Click's help with its `\\b` (keep these lines) markers made into
    preformatted blocks, and its `\\f` cut honoured."""
    text = text.split("\f", 1)[0]
    paragraphs = [p.strip("\n") for p in text.split("\n\n")]
    out = []
    for para in paragraphs:
        lines = [ln.strip() for ln in para.splitlines()]
        if lines and lines[0] == "\b":
            out.append("```\n" + "\n".join(lines[1:]) + "\n```")
        else:
            out.append(" ".join(ln for ln in lines if ln))
    return "\n\n".join(out)


def cli_reference() -> str:
    from roost.cli.main import cli

    out = [
        "# Command reference\n",
        "Generated from the `roost` command's own definitions at every build of "
        "this manual: what is here is what `roost --help` says. Every command "
        "takes the global options of `roost` itself (`--data DIR`, `--insecure`) "
        "before its name.\n",
    ]
    _command_page(cli, ["roost"], out)
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- the API


def openapi_document() -> dict[str, Any]:
    from roost.controller.api.app import create_api
    from roost.controller.astore import AsyncStore
    from roost.controller.core import Controller
    from roost.controller.service import ControllerService
    from roost.controller.store import Store
    from roost.settings import Settings
    from roost.state.db import make_engine, sqlite_url

    with tempfile.TemporaryDirectory() as tmp:
        # An application needs a controller to exist; the document needs no data.
        engine = make_engine(sqlite_url(Path(tmp) / "docs.db"))
        controller = Controller(AsyncStore(Store(engine)), Settings(), "docs")
        try:
            doc: dict[str, Any] = create_api(
                controller, ControllerService(controller, None)
            ).openapi()
        finally:
            engine.dispose()
    return doc


def _schema_text(schema: dict[str, Any], components: dict[str, Any]) -> str:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#schema-{name.lower()})"
    if "anyOf" in schema:
        return " or ".join(_schema_text(s, components) for s in schema["anyOf"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"list of {_schema_text(schema.get('items', {}), components)}"
    if kind == "object" and "additionalProperties" in schema:
        extra = schema["additionalProperties"]
        inner = _schema_text(extra, components) if isinstance(extra, dict) else "any"
        return f"object of {inner}"
    if "enum" in schema:
        return " \\| ".join(f"`{v}`" for v in schema["enum"])
    return str(kind)


def api_reference(doc: dict[str, Any]) -> str:
    components = doc.get("components", {}).get("schemas", {})
    out = [
        "# HTTP API reference\n",
        f"Generated from the OpenAPI document of Roost {doc['info']['version']} at every "
        "build of this manual. A running controller serves the same document at "
        "`/api/openapi.json` and an interactive view of it at `/api/docs`.\n",
        "Every endpoint but `/api/health` and `/api/login` wants a token: "
        "`Authorization: Bearer TOKEN` (`roost login` saves one; `roost up` writes the "
        "admin's to the data directory; ep.io's client sends `X-Epio-Token`). Errors answer JSON `{\"message\": ...}` with a 4xx "
        "status; a 503 with `Retry-After` while the state database fails over.\n",
    ]
    by_tag: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for path, item in sorted(doc["paths"].items()):
        for method in HTTP_METHODS:
            if method in item:
                by_tag.setdefault(_section(path), []).append((method, path, item[method]))
    for section in sorted(by_tag):
        out.append(f"## {section}\n")
        for method, path, op in by_tag[section]:
            out.append(f"### `{method.upper()} {path}`\n")
            text = op.get("description") or op.get("summary") or ""
            if text:
                out.append(_cell(text) + "\n")
            # The token headers are every endpoint's: said once, above.
            params = [p for p in op.get("parameters", []) if p["name"] not in TOKEN_HEADERS]
            if params:
                out.append("| parameter | in | type | required |\n|---|---|---|---|")
                for p in params:
                    kind = _schema_text(p.get("schema", {}), components)
                    required = "yes" if p.get("required") else "no"
                    out.append(f"| `{p['name']}` | {p['in']} | {kind} | {required} |")
                out.append("")
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            if body:
                out.append(f"Body: {_schema_text(body['schema'], components)}\n")
            codes = ", ".join(f"{code}" for code in sorted(op.get("responses", {})))
            out.append(f"Answers: {codes}\n")
    if components:
        out.append("## Schemas\n")
        for name, schema in sorted(components.items()):
            out.append(f'<a id="schema-{name.lower()}"></a>\n\n### {name}\n')
            props = schema.get("properties", {})
            if props:
                required = set(schema.get("required", []))
                out.append("| field | type | required |\n|---|---|---|")
                for field, sub in props.items():
                    mark = "yes" if field in required else "no"
                    out.append(f"| `{field}` | {_schema_text(sub, components)} | {mark} |")
                out.append("")
            else:
                out.append(_schema_text(schema, components) + "\n")
    return "\n".join(out) + "\n"


def _section(path: str) -> str:
    """Endpoints grouped by what they act on: /api/apps/{name}/config -> apps: config."""
    parts = [p for p in path.split("/") if p and p != "api" and not p.startswith("{")]
    if not parts:
        return "other"
    if parts[0] == "apps" and len(parts) > 1:
        return f"apps: {parts[1]}"
    return parts[0]


# ---------------------------------------------------------------- settings


def settings_reference() -> str:
    from roost.settings import Settings

    out = [
        "# Settings reference\n",
        "Every platform setting, generated from `roost.settings` (where each is "
        "declared once) at every build of this manual. Each daemon reads them from "
        "its environment; under systemd they live in `/etc/roost/roost.env`. Apps' "
        "own configuration is not here: it is config vars (`roost config`).\n",
        "| variable | default | what it sets |\n|---|---|---|",
    ]
    for _name, env, default, doc in Settings.describe():
        shown = f"`{default}`" if default not in ("", None) else "(empty)"
        out.append(f"| `{env}` | {_cell(shown)} | {_cell(doc)} |")
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------- the hook


def on_files(files: Files, config: MkDocsConfig) -> Files:
    files.append(File.generated(config, "reference/cli.md", content=cli_reference()))
    files.append(File.generated(config, "reference/settings.md", content=settings_reference()))
    doc = openapi_document()
    files.append(File.generated(config, "reference/api.md", content=api_reference(doc)))
    files.append(
        File.generated(config, "reference/openapi.json", content=json.dumps(doc, indent=1))
    )
    return files
