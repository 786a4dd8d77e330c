"""epio.ini sections about the app's surroundings: [env], [services], [redis],
[checkout] and [cron]."""

from __future__ import annotations

import re

from roost.appspec.cron import parse_schedule, split_overlap
from roost.appspec.errors import AppSpecError
from roost.appspec.hints import SECTION_KEYS, commented_header_hint
from roost.appspec.model import CronJob
from roost.appspec.reader import Reader

SERVICES = ("postgres", "redis", "s3")
# Set by the platform for every process (see runtime.environment).
RESERVED_ENV = ("PATH", "HOME", "PORT", "PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")
DEFAULT_CHECKOUT = "app"


def map_env(r: Reader) -> dict[str, str]:
    sect = r.section("env")
    env: dict[str, str] = {}
    if sect is None:
        return env
    for opt in sect.options.values():
        # Environment values may span lines (py2 joined continuation lines).
        value = r.text(sect, opt, multiline=True)
        if value is None:
            continue
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            r.warn(
                f"{opt.name} = {value}: the quotes are part of the value",
                opt.line,
                "ep.io passed them on literally; remove them unless the app expects them",
            )
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", opt.name):
            r.warn(f"{opt.name!r} is not a usable environment variable name", opt.line)
        if opt.name in RESERVED_ENV or opt.name.startswith("ROOST_"):
            r.warn(f"{opt.name} is set by Roost; setting it here may break the app", opt.line)
        r.check_runtime_text(value, opt.line)
        env[opt.name] = value
    return env


def map_services(r: Reader) -> list[str]:
    """Services to provision; one Roost cannot provide is an error at its line."""
    sect = r.section("services")
    services: list[str] = []
    if sect is None:
        return services
    for opt in sect.options.values():
        wanted = r.boolean(sect, opt.name, False)
        if opt.name in SERVICES:
            if wanted:
                services.append(opt.name)
        elif not wanted:
            r.unknown_key(sect, opt, SERVICES, f"service {opt.name!r} is off; ignored")
        else:
            r.unknown.setdefault("services", {})[opt.name] = opt.value
            hint = "Roost provides " + ", ".join(SERVICES[:-1]) + " and " + SERVICES[-1]
            r.error(f"service {opt.name!r} is not supported by Roost", opt.line, hint)
    return services


def map_redis(r: Reader, services: list[str]) -> int | None:
    sect = r.section("redis")
    r.check_keys(sect, SECTION_KEYS["redis"])
    got = r.integer(sect, "memory")
    if got is None:
        return None
    memory, line = got
    if memory == 0:
        r.error("[redis] memory must be at least 1 (MB)", line)
        return None
    if "redis" not in services:
        r.warn("[redis] memory has no effect without [services] redis = true", line)
    return memory


def map_checkout(r: Reader) -> str:
    sect = r.section("checkout")
    r.check_keys(sect, SECTION_KEYS["checkout"])
    got = r.get(sect, "directory_name")
    if got is None or got[0] == "":
        return DEFAULT_CHECKOUT
    value, line = got
    if not re.fullmatch(r"[A-Za-z0-9._-]+", value) or value in (".", ".."):
        r.error(
            f"directory_name = {value!r} must be a single directory name",
            line,
            "letters, digits, '.', '_' and '-'",
        )
        return DEFAULT_CHECKOUT
    return value


def map_cron(r: Reader) -> list[CronJob]:
    """[cron]: the command line is the key, the 5-field schedule the value
    (optionally followed by `overlap=allow|skip|queue`)."""
    sect = r.section("cron")
    jobs: list[CronJob] = []
    if sect is None:
        return jobs
    for opt in sect.options.values():
        value = r.text(sect, opt)
        if value is None:
            continue
        try:
            text, overlap = split_overlap(value)
            schedule = parse_schedule(text)
        except AppSpecError as exc:
            hint = commented_header_hint(r.doc, "cron", opt)
            hint = hint or "in [cron] the command is the key and the schedule the value"
            r.error(exc.problems[0].message, opt.line, hint)
            continue
        source = f"{r.file}:{opt.line}"
        jobs.append(
            CronJob(command=opt.name, schedule=schedule.text, source=source, overlap=overlap)
        )
    return jobs
