"""Heroku's and Dokku's `app.json` manifest -> the parts of an AppSpec it says (pure).

What is read
------------
* `scripts`: `dokku.predeploy` (once per deploy, before the release serves,
  before the Procfile's `release:`) and `dokku.postdeploy` (once after it
  serves); Heroku's top-level `postdeploy` (Heroku runs it once, after the
  app's first deploy) is taken as the postdeploy script when Dokku's is
  absent, with a warning that Roost runs it after every deploy.
* `formation`: process type -> `quantity` (a whole number >= 0) and, a
  Roost key, `singleton` (true: the type never runs twice, e.g. a clock: one
  instance, a new release's started only once the old one stopped; a
  quantity above 1 is an error). `size`, `max_parallel`, `autoscaling` and
  `service` are accepted and ignored with a warning: Roost has no dyno
  sizes and scales by its own rules.
* `cron` (Dokku): a list of `{command, schedule, concurrency_policy}`;
  schedules go through the same parser as epio.ini's [cron]; Dokku's
  `allow`/`forbid` are Roost's overlap `allow`/`skip` (`replace` is refused).
* `healthchecks` (Dokku): process type -> a list of checks. Roost keeps one
  HTTP check per process type: the first `startup` check (a check without
  `type` is one), else the first `readiness`, else the first `liveness`;
  the others, and checks that run a command, test a listening port or an
  uptime, are ignored with a warning. `path`, `timeout`, `attempts`, `wait`
  (between attempts), `initialDelay` and `content` map onto `HealthCheck`
  (status 2xx/3xx expected; Dokku's defaults: 5 s timeout, 3 attempts, 5 s
  wait, no delay).
* `env`: a name -> a string, or `{description, value, required, generator}`.
  A `value` becomes the variable's default. `generator: "secret"` generates
  nothing (Roost does not make secrets up): a warning says to set it with
  `roost config`; so does `required` without a value.
* `addons`: `heroku-postgresql` and `heroku-redis` (any plan) are Roost's
  postgres and redis services; any other add-on is ignored with a warning.
* `name`, `description`, `keywords`, `website`, `repository`, `logo`,
  `success_url`, `image`, `stack`, `buildpacks`, `environments` are
  accepted and ignored (they describe a Heroku button or a buildpack build).

Bad input: a key Roost does not know is a warning naming its path
(`healthchecks.web[0].colour`); a value of the wrong type is an error naming
its path (`healthchecks.web[0].timeout: expected a number, got "ten"`);
invalid JSON is an error with its line and column; a file over
MAX_APP_JSON_BYTES is refused. Nothing here raises: `parse_app_json` always
returns, with its problems in `diag`.

How app.json merges with epio.ini and the Procfile is `roost.appspec.compose`'s.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from roost.appspec.cron import parse_schedule
from roost.appspec.errors import AppSpecError
from roost.appspec.model import CronJob, HealthCheck
from roost.appspec.reader import Diagnostics

APP_JSON = "app.json"
# Real manifests are a few KB; a bigger one is a mistake, not a manifest.
MAX_APP_JSON_BYTES = 256 * 1024
ADDON_SERVICES = {"heroku-postgresql": "postgres", "heroku-redis": "redis"}
_CONCURRENCY = {"allow": "allow", "forbid": "skip"}
_CHECK_ORDER = ("startup", "readiness", "liveness")
_IGNORED_TOP = (
    "name",
    "description",
    "keywords",
    "website",
    "repository",
    "logo",
    "success_url",
    "image",
    "stack",
    "buildpacks",
    "environments",
)
_CHECK_KEYS = (
    "attempts",
    "command",
    "content",
    "description",
    "initialDelay",
    "listening",
    "name",
    "onFailure",
    "path",
    "port",
    "scheme",
    "timeout",
    "type",
    "uptime",
    "wait",
    "warn",
)
_PROCESS_TYPE = re.compile(r"^[A-Za-z0-9_-]+$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class AppJson:
    """What an app.json says that Roost uses; empty parts when it says nothing."""

    predeploy: str | None = None
    postdeploy: str | None = None
    formation: dict[str, int] = field(default_factory=dict)
    singletons: list[str] = field(default_factory=list)  # formation `singleton: true`
    cron: list[CronJob] = field(default_factory=list)
    healthchecks: dict[str, HealthCheck] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    services: list[str] = field(default_factory=list)


def _show(value: Any) -> str:
    """A JSON value as the user wrote it, cut short."""
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


class _Walk:
    """Typed access to decoded JSON; every problem names the key's path."""

    def __init__(self, diag: Diagnostics, file: str) -> None:
        self.diag = diag
        self.file = file

    def error(self, path: str, message: str, hint: str = "") -> None:
        self.diag.error(f"{path}: {message}", self.file, hint=hint)

    def warn(self, path: str, message: str, hint: str = "") -> None:
        self.diag.warn(f"{path}: {message}", self.file, hint=hint)

    def wrong(self, path: str, expected: str, value: Any) -> None:
        self.error(path, f"expected {expected}, got {_show(value)}")

    def obj(self, value: Any, path: str) -> dict[str, Any] | None:
        if isinstance(value, dict):
            return value
        self.wrong(path, "an object", value)
        return None

    def array(self, value: Any, path: str) -> list[Any] | None:
        if isinstance(value, list):
            return value
        self.wrong(path, "a list", value)
        return None

    def string(self, value: Any, path: str) -> str | None:
        if isinstance(value, str):
            return value
        self.wrong(path, "a string", value)
        return None

    def required(self, obj: dict[str, Any], key: str, path: str) -> str | None:
        if key not in obj:
            self.error(f"{path}.{key}", "is required")
            return None
        return self.string(obj[key], f"{path}.{key}")

    def boolean(self, value: Any, path: str) -> bool | None:
        if isinstance(value, bool):
            return value
        self.wrong(path, "true or false", value)
        return None

    def number(self, value: Any, path: str, lowest: float = 0.0) -> float | None:
        # JSON's true/false decode to bool, which Python counts as an int.
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.wrong(path, "a number", value)
            return None
        if not lowest <= value < 1e9:
            self.error(path, f"{_show(value)} is out of range (at least {lowest:g})")
            return None
        return float(value)

    def whole(self, value: Any, path: str, lowest: int = 0) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.wrong(path, "a whole number", value)
            return None
        if not lowest <= value < 1_000_000:
            self.error(path, f"{value} is out of range (at least {lowest})")
            return None
        return value

    def known(self, obj: dict[str, Any], path: str, keys: tuple[str, ...]) -> None:
        for key in obj:
            if key not in keys:
                where = f"{path}.{key}" if path else key
                self.warn(where, "Roost does not know this key; ignored")

    def process_type(self, name: str, path: str) -> bool:
        if _PROCESS_TYPE.match(name):
            return True
        self.error(path, f"{name!r} is not a process type (letters, digits, '_' and '-')")
        return False


def _scripts(w: _Walk, value: Any, result: AppJson) -> None:
    scripts = w.obj(value, "scripts")
    if scripts is None:
        return
    w.known(scripts, "scripts", ("dokku", "postdeploy", "pr-predestroy"))
    if "pr-predestroy" in scripts:
        w.warn("scripts.pr-predestroy", "Roost has no review apps; ignored")
    heroku = scripts.get("postdeploy")
    if heroku is not None:
        result.postdeploy = w.string(heroku, "scripts.postdeploy")
        if result.postdeploy is not None:
            # Seeding scripts written for Heroku's once-only run must be safe to repeat here.
            w.warn(
                "scripts.postdeploy",
                "Heroku runs it once, when the app is created; Roost runs it after every deploy",
                "make it safe to run again, or move it to scripts.dokku.postdeploy",
            )
    dokku = w.obj(scripts["dokku"], "scripts.dokku") if "dokku" in scripts else None
    if dokku is None:
        return
    w.known(dokku, "scripts.dokku", ("predeploy", "postdeploy"))
    if "predeploy" in dokku:
        result.predeploy = w.string(dokku["predeploy"], "scripts.dokku.predeploy")
    if "postdeploy" in dokku:
        command = w.string(dokku["postdeploy"], "scripts.dokku.postdeploy")
        if command is not None and result.postdeploy not in (None, command):
            w.warn(
                "scripts.postdeploy",
                "both Heroku's and Dokku's postdeploy are set; Dokku's runs",
            )
        if command is not None:
            result.postdeploy = command


def _per_process(w: _Walk, value: Any, section: str) -> Iterator[tuple[str, str, Any]]:
    """(process type, its key's path, its value) for each well-named key of an object."""
    for name, entry in (w.obj(value, section) or {}).items():
        path = f"{section}.{name}"
        if w.process_type(name, path):
            yield name, path, entry


def _formation(w: _Walk, value: Any, result: AppJson) -> None:
    for name, path, entry in _per_process(w, value, "formation"):
        proc = w.obj(entry, path)
        if proc is None:
            continue
        w.known(
            proc, path, ("quantity", "singleton", "size", "max_parallel", "autoscaling", "service")
        )
        for ignored in ("size", "max_parallel", "autoscaling", "service"):
            if ignored in proc:
                w.warn(f"{path}.{ignored}", "Roost does not use this; ignored")
        quantity = None
        if "quantity" in proc:
            quantity = w.whole(proc["quantity"], f"{path}.quantity")
            if quantity is not None:
                result.formation[name] = quantity
        if "singleton" in proc and w.boolean(proc["singleton"], f"{path}.singleton"):
            if quantity is not None and quantity > 1:
                w.error(
                    f"{path}.quantity",
                    f"a singleton runs one instance, not {quantity}",
                    hint="set quantity to 1 (or 0), or drop singleton",
                )
            result.singletons.append(name)


def _cron(w: _Walk, value: Any, result: AppJson) -> None:
    for index, entry in enumerate(w.array(value, "cron") or []):
        path = f"cron[{index}]"
        job = w.obj(entry, path)
        if job is None:
            continue
        w.known(job, path, ("command", "schedule", "concurrency_policy", "maintenance"))
        command = w.required(job, "command", path)
        schedule_text = w.required(job, "schedule", path)
        policy = w.string(job.get("concurrency_policy", "allow"), f"{path}.concurrency_policy")
        if job.get("maintenance") is not None and w.boolean(
            job["maintenance"], f"{path}.maintenance"
        ):
            w.warn(f"{path}.maintenance", "Roost has no maintenance mode; the job runs")
        if command is None or schedule_text is None or policy is None:
            continue
        if not command.strip():
            w.error(f"{path}.command", "is empty")
            continue
        overlap = _CONCURRENCY.get(policy)
        if overlap is None:
            w.error(
                f"{path}.concurrency_policy",
                f"{policy!r} is not offered",
                "use allow or forbid (Roost does not replace a running job)",
            )
            continue
        try:
            schedule = parse_schedule(schedule_text)
        except AppSpecError as exc:
            w.error(f"{path}.schedule", exc.problems[0].message)
            continue
        result.cron.append(
            CronJob(
                command=command,
                schedule=schedule.text,
                source=f"{w.file}:{path}",
                overlap=overlap,
            )
        )


def _check(w: _Walk, check: dict[str, Any], path: str) -> HealthCheck | None:
    """One Dokku check as a HealthCheck; None when its values are wrong."""
    ok = True

    def num(key: str, default: float, lowest: float = 0.0) -> float:
        nonlocal ok
        if key not in check:
            return default
        got = w.number(check[key], f"{path}.{key}", lowest)
        ok = ok and got is not None
        return default if got is None else got

    def text(key: str, default: str) -> str:
        nonlocal ok
        if key not in check:
            return default
        got = w.string(check[key], f"{path}.{key}")
        ok = ok and got is not None
        return default if got is None else got

    check_path = text("path", "/")
    if not check_path.startswith("/") or any(c.isspace() for c in check_path):
        w.error(f"{path}.path", f"{check_path!r} is not a URL path (it starts with /)")
        ok = False
    attempts = check.get("attempts", 3)
    whole = w.whole(attempts, f"{path}.attempts", lowest=1)
    ok = ok and whole is not None
    result = HealthCheck(
        path=check_path,
        content=text("content", ""),
        timeout=num("timeout", 5.0, lowest=0.001),
        attempts=whole or 3,
        initial_delay=num("initialDelay", 0.0),
        interval=num("wait", 5.0),
        source=f"{w.file}:{path}",
    )
    if text("scheme", "http") != "http":
        w.warn(f"{path}.scheme", "Roost checks an instance over plain HTTP; ignored")
    if "port" in check:
        w.warn(f"{path}.port", "Roost checks the port the instance is given; ignored")
    return result if ok else None


def _is_http(check: dict[str, Any]) -> bool:
    return not any(k in check for k in ("command", "listening", "uptime"))


def _healthchecks(w: _Walk, value: Any, result: AppJson) -> None:
    for name, path, entries in _per_process(w, value, "healthchecks"):
        listed = w.array(entries, path)
        if listed is None:
            continue
        candidates: list[tuple[int, int, dict[str, Any]]] = []
        for index, entry in enumerate(listed):
            item_path = f"{path}[{index}]"
            check = w.obj(entry, item_path)
            if check is None:
                continue
            w.known(check, item_path, _CHECK_KEYS)
            kind = w.string(check.get("type", "startup"), f"{item_path}.type")
            if kind is None:
                continue
            if kind not in _CHECK_ORDER:
                w.error(f"{item_path}.type", f"{kind!r} is not startup, readiness or liveness")
                continue
            if not _is_http(check):
                w.warn(item_path, "Roost runs HTTP checks only; this one is ignored")
                continue
            candidates.append((_CHECK_ORDER.index(kind), index, check))
        if not candidates:
            continue
        candidates.sort(key=lambda c: c[:2])
        _, index, chosen = candidates[0]
        got = _check(w, chosen, f"{path}[{index}]")
        for _, other, _check_obj in candidates[1:]:
            w.warn(f"{path}[{other}]", f"Roost runs one check per process type ({path}[{index}])")
        if got is not None:
            result.healthchecks[name] = got


def _env(w: _Walk, value: Any, result: AppJson) -> None:
    env = w.obj(value, "env")
    for name, entry in (env or {}).items():
        path = f"env.{name}"
        if not _ENV_NAME.match(name):
            w.warn(path, "is not a usable environment variable name")
        if isinstance(entry, str):
            result.env[name] = entry
            continue
        spec = w.obj(entry, path)
        if spec is None:
            continue
        w.known(spec, path, ("description", "value", "required", "generator"))
        if "description" in spec:
            w.string(spec["description"], f"{path}.description")
        required = w.boolean(spec.get("required", True), f"{path}.required")
        if "value" in spec:
            default = w.string(spec["value"], f"{path}.value")
            if default is not None:
                result.env[name] = default
        elif "generator" in spec:
            generator = w.string(spec["generator"], f"{path}.generator")
            if generator is not None:
                w.warn(
                    f"{path}.generator",
                    f"Roost generates no values ({generator!r}); the variable stays unset",
                    f"set it with roost config:set {name}=...",
                )
        elif required:
            w.warn(path, "has no value", f"set it with roost config:set {name}=...")


def _addons(w: _Walk, value: Any, result: AppJson) -> None:
    for index, entry in enumerate(w.array(value, "addons") or []):
        path = f"addons[{index}]"
        if isinstance(entry, dict):
            w.known(entry, path, ("plan", "as", "options"))
            plan = w.string(entry.get("plan"), f"{path}.plan")
        else:
            plan = w.string(entry, path)
        if plan is None:
            continue
        service = ADDON_SERVICES.get(plan.split(":", 1)[0])
        if service is None:
            w.warn(
                path,
                f"add-on {plan!r} is not provided; ignored",
                "Roost provides " + ("heroku-postgresql (postgres) and heroku-redis (redis)"),
            )
        elif service not in result.services:
            result.services.append(service)


_SECTIONS = {
    "scripts": _scripts,
    "formation": _formation,
    "cron": _cron,
    "healthchecks": _healthchecks,
    "env": _env,
    "addons": _addons,
}


def _decode(data: bytes | str, w: _Walk) -> Any:
    """The JSON document, or None after an error (the document `null` is an error too)."""
    if len(data) > MAX_APP_JSON_BYTES:
        w.diag.error(f"larger than {MAX_APP_JSON_BYTES} bytes; refused", w.file)
        return None
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            w.diag.error(f"not UTF-8 (byte {exc.start})", w.file)
            return None
    try:
        return json.loads(data)
    except json.JSONDecodeError as exc:
        w.diag.error(
            f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}", w.file, exc.lineno
        )
    except RecursionError:
        w.diag.error("nested too deeply to be a manifest", w.file)
    except ValueError as exc:  # e.g. an integer with too many digits
        w.diag.error(f"invalid JSON: {exc}", w.file)
    return None


def parse_app_json(
    data: bytes | str, diag: Diagnostics, filename: str = APP_JSON
) -> AppJson | None:
    """Read an app.json's contents; None when it is not a JSON object (see `diag`)."""
    w = _Walk(diag, filename)
    errors_before = len(diag.errors)
    document = _decode(data, w)
    if document is None and len(diag.errors) > errors_before:
        return None  # not JSON at all: _decode said why
    if not isinstance(document, dict):
        w.wrong("the document", "an object", document)
        return None
    w.known(document, "", (*_SECTIONS, *_IGNORED_TOP))
    result = AppJson()
    for key, read in _SECTIONS.items():
        if key in document:
            read(w, document[key], result)
    return result
