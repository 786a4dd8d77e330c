"""The typed description of an app that every role reads.

`AppSpec` is produced by `roost.appspec` from an app directory (epio.ini and/or
Procfile) and travels over the wire inside build results and assignments, so
it is a frozen msgspec Struct: encodable, comparable, and cheap to copy.

Runtime values that differ per instance or per host (the instance's port, its
unix socket, the host's data directory, the app id) are *not* resolved here;
commands keep them as placeholders and `roost.appspec.runtime` renders them
when an instance starts.
"""

from __future__ import annotations

from typing import Literal

import msgspec

ProcessKind = Literal["wsgi", "command"]


class ProcessSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One process type.

    kind "wsgi": the platform runs gunicorn on `entrypoint` (module:callable),
    bound to the instance's unix socket and TCP port.
    kind "command": `command` is a shell command line; placeholders
    `%(port)s`, `%(unix_sock)s`, `%(app_id)s`, `%(data_directory)s` and
    `$PORT` are filled in per instance by `roost.appspec.runtime`.
    """

    name: str
    kind: ProcessKind
    command: str = ""
    entrypoint: str = ""
    # Working directory, relative to the app checkout.
    cwd: str = "."
    # True when the process serves HTTP (the router sends traffic to it).
    web: bool = False
    # Where this process was declared, for error messages: "epio.ini:12", "Procfile:3".
    source: str = ""
    # kind "wsgi" only: gunicorn worker class asked for by epio.ini's
    # `[wsgi] async_type` ("eventlet" or "gevent"); "" means gunicorn's default.
    async_type: str = ""


class StaticMapping(msgspec.Struct, frozen=True, kw_only=True):
    """URL prefix served from a directory or a single file by the router.

    `url_prefix` starts with "/" and has no trailing slash (except "/" itself);
    when prefixes nest ("/static", "/static/admin") the longest one wins.
    `path` is normalised and relative ("" or "." for the root itself) to
    `root`:
      "app"           the app checkout ("static", "." for `/ = ./`);
      "data"          the app's persistent data directory (epio.ini's
                      `%(data_directory)s/x`, `../data/x`, `~/data/x`);
      "admin_media"   Django's admin static files, i.e. the release
                      virtualenv's `django/contrib/admin/static/admin`
                      (`%(django_admin_media)s`, `../shortcuts/django-admin-media`);
      "site_packages" the release virtualenv's site-packages directory
                      (`../pyenv/lib/python2.7/site-packages/x`).
    `is_file` marks a single-file target (`/robots.txt = robots.txt`).
    """

    url_prefix: str
    path: str
    root: Literal["app", "data", "admin_media", "site_packages"] = "app"
    is_file: bool = False


class HttpOptions(msgspec.Struct, frozen=True, kw_only=True):
    gzip: bool = False
    # URL prefix -> cache lifetime in seconds.
    expires: dict[str, int] = {}


class BasicAuth(msgspec.Struct, frozen=True, kw_only=True):
    users: dict[str, str] = {}
    realm: str = "Restricted"


class DjangoSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A Django project: `base` (relative to the checkout) holds manage.py and
    the settings module and goes on sys.path; `settings_module` is the
    DJANGO_SETTINGS_MODULE processes get unless [env] sets one.
    """

    base: str = "."
    # ep.io appended DATABASES etc. to the settings module unless this is false.
    append_settings: bool = True
    settings_module: str = ""
    # True when epio.ini has no [django] section but the app is served by
    # Django's handler anyway (no `[wsgi] entrypoint`, as ep.io did).
    implied: bool = False


class CeleryOptions(msgspec.Struct, frozen=True, kw_only=True):
    """epio.ini [celery]: `djcelery = true` adds a managed "celeryd" process
    (`python manage.py celeryd` in `base`) unless [process-celeryd] replaces it.
    """

    djcelery: bool = False
    base: str = "."
    append_settings: bool = True


class CronJob(msgspec.Struct, frozen=True, kw_only=True):
    """A shell command run in the app checkout on a 5-field cron schedule
    (validated and normalised by `roost.appspec.cron`; `@daily` and friends
    are expanded). Placeholders in `command` are filled per run by
    `roost.appspec.runtime.substitute`.
    """

    command: str
    schedule: str
    source: str = ""
    # When a run is due while an earlier one still goes on: "allow" (run it
    # too), "skip" (record it skipped) or "queue" (run it after); see
    # `roost.appspec.cron`.
    overlap: str = "allow"


class HealthCheck(msgspec.Struct, frozen=True, kw_only=True):
    """How to tell that a new instance of a process type is ready for traffic.

    An HTTP GET of `path` on the instance must answer a status in
    `status_min`..`status_max` (2xx/3xx by default) and, when `content` is set,
    a body containing it, within `timeout` seconds. The first try is made
    `initial_delay` seconds after the start, then every `interval` seconds, at
    most `attempts` times. Read from app.json's `healthchecks`
    (`roost.appspec.appjson`).
    """

    path: str = "/"
    status_min: int = 200
    status_max: int = 399
    content: str = ""
    timeout: float = 5.0
    attempts: int = 3
    initial_delay: float = 0.0
    interval: float = 5.0
    source: str = ""


class ConfigWarning(msgspec.Struct, frozen=True, kw_only=True):
    message: str
    file: str = ""
    line: int = 0
    hint: str = ""


class AppSpec(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the platform needs to know about an app, from its config.

    Paths are relative to the app checkout unless a field says otherwise.
    `symlinks` maps a link path to its target, both relative to the checkout
    (not to the link's own directory); a target in the data directory is
    written `%(data_directory)s/...` and is resolved per host
    (`roost.appspec.runtime.symlink_target`).
    """

    processes: dict[str, ProcessSpec] = {}
    requirements: str | None = None
    python_path: list[str] = []
    static: list[StaticMapping] = []
    static_directory_indexes: bool = False
    env: dict[str, str] = {}
    services: list[str] = []
    redis_memory_mb: int | None = None
    django: DjangoSpec | None = None
    celery: CeleryOptions | None = None
    checkout_name: str = "app"
    symlinks: dict[str, str] = {}
    http: HttpOptions = HttpOptions()
    cron: list[CronJob] = []
    basic_auth: BasicAuth | None = None
    # Procfile `release:` command, run once per deploy before the release serves.
    release_command: str | None = None
    # app.json `scripts`: run once per deploy before the release serves
    # (before `release_command`), and once after it serves.
    predeploy_command: str | None = None
    postdeploy_command: str | None = None
    # Process type -> health check (app.json `healthchecks`).
    healthchecks: dict[str, HealthCheck] = {}
    # Process type -> instance count asked for (app.json `formation`).
    formation: dict[str, int] = {}
    # Process types that must never run twice, e.g. a clock (app.json
    # `formation` `singleton: true`): one instance, and a new release's
    # starts only once the old one stopped.
    singletons: list[str] = []
    # The Python version the app asks for (a prefix: "3.12"), and where it
    # says so (roost.appspec.python_version); None: the builder's default.
    python_version: str | None = None
    python_source: str = ""
    warnings: list[ConfigWarning] = []
    # The config files this spec was read from, e.g. ["epio.ini", "Procfile"].
    sources: list[str] = []
    # Sections and keys Roost does not use, kept verbatim (section -> key -> raw
    # value) so nothing in the user's file is silently lost.
    unknown: dict[str, dict[str, str]] = {}

    @property
    def web_process(self) -> ProcessSpec | None:
        for proc in self.processes.values():
            if proc.web:
                return proc
        return None
