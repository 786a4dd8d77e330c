"""epio.ini -> AppSpec: what each of ep.io's sections asks for.

Defaults follow ep.io, as far as the real configs show it:
* The web process is gunicorn on `[wsgi] entrypoint`. `module` alone means
  `module:application`. With no entrypoint the app is served by Django's
  WSGI handler, with or without a [django] section: every real config
  without an entrypoint is a Django project, including those whose [django]
  header was left commented out (their DJANGO_SETTINGS_MODULE in [env] shows
  it), so ep.io must have done the same. Without [django] the project base
  is the checkout itself (`DjangoSpec.implied`).
* DJANGO_SETTINGS_MODULE defaults to `settings` (Django 1.3's layout, with
  the [django] base on sys.path).
* `[wsgi] enabled = false` means no app server: a static-only site.
* `[process-web]` replaces the WSGI server; its command must listen on
  `%(unix_sock)s` (or `%(port)s`).
* `[celery] djcelery = true` adds a "celeryd" process unless
  [process-celeryd] is declared.
Sections and keys Roost does not use are kept in `AppSpec.unknown` and warned
about; services Roost cannot provide are errors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from roost.appspec.epio_app import map_checkout, map_cron, map_env, map_redis, map_services
from roost.appspec.epio_web import map_basic_auth, map_http, map_static, map_symlinks
from roost.appspec.hints import KNOWN_SECTIONS, SECTION_KEYS, section_hint
from roost.appspec.ini import IniDocument, IniSection
from roost.appspec.model import AppSpec, CeleryOptions, DjangoSpec, ProcessSpec
from roost.appspec.reader import Diagnostics, Reader
from roost.appspec.values import dotted_name, rel_path

DJANGO_ENTRYPOINT = "django.core.wsgi:get_wsgi_application()"
DEFAULT_SETTINGS_MODULE = "settings"
DEFAULT_CALLABLE = "application"
CELERY_COMMAND = "python manage.py celeryd"
ASYNC_TYPES = ("eventlet", "gevent")
PROCESS_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
# What a [process-web] command may listen on.
LISTENERS = ("%(unix_sock)s", "%(port)s", "$PORT", "${PORT}")


@dataclass
class EpioResult:
    spec: AppSpec
    # Where things were declared, for checks that run later: "requirements",
    # "web", "entrypoint", "django", "django.base", "celery.base", "pythonpath",
    # "process:<name>", "static:<prefix>", "symlink:<link>".
    lines: dict[str, int]


def normalize_entrypoint(text: str) -> tuple[str, str, str]:
    """(`module:callable`, error, hint); error is "" when the entrypoint is usable."""
    module, sep, attr = text.partition(":")
    if not sep:
        attr = DEFAULT_CALLABLE
    if module.endswith(".py") and not sep:
        stem = module[:-3].replace("/", ".")
        return "", f"entrypoint {text!r} is a file name", f"write entrypoint = {stem}:application"
    if ":" in attr:
        parts = text.split(":")
        hint = "write module:callable"
        if dotted_name(parts[-2]) and dotted_name(parts[-1]):
            hint += f", e.g. {parts[-2]}:{parts[-1]}"
        return "", f"entrypoint {text!r} has more than one ':'", hint
    if not dotted_name(module):
        return (
            "",
            f"entrypoint module {module!r} is not a Python module path",
            "use dots, not slashes: package.module:callable",
        )
    name, paren, rest = attr.partition("(")
    if not dotted_name(name) or (paren and not rest.endswith(")")):
        return (
            "",
            f"entrypoint callable {attr!r} is not a Python name",
            "write module:callable, with dots in the module path (package.module:app)",
        )
    return f"{module}:{attr}", "", ""


class _EpioMapper:
    def __init__(self, doc: IniDocument, diag: Diagnostics) -> None:
        self.doc = doc
        self.r = Reader(doc, diag)
        self.lines: dict[str, int] = {}

    def run(self) -> AppSpec:
        self._sections()
        env = map_env(self.r)
        services = map_services(self.r)
        wsgi = self.r.section("wsgi")
        self.r.check_keys(wsgi, SECTION_KEYS["wsgi"])
        django = self._django(env)
        processes = self._processes()
        web, implied = self._web(wsgi, "web" in processes)
        if implied and django is None:
            django = DjangoSpec(implied=True, settings_module=self._settings(env))
        if web is not None:
            processes = {"web": web, **processes}
        celery = self._celery(django, processes)
        static, indexes = map_static(self.r, self.lines)
        return AppSpec(
            processes=processes,
            requirements=self._path(wsgi, "requirements"),
            python_path=self._python_path(wsgi),
            static=static,
            static_directory_indexes=indexes,
            env=env,
            services=services,
            redis_memory_mb=map_redis(self.r, services),
            django=django,
            celery=celery,
            checkout_name=map_checkout(self.r),
            symlinks=map_symlinks(self.r, self.lines),
            http=map_http(self.r),
            cron=map_cron(self.r),
            basic_auth=map_basic_auth(self.r),
            python_version=self._python_version(wsgi),
            sources=[self.doc.filename],
            unknown=self.r.unknown,
        )

    # ------------------------------------------------------------ structure

    def _sections(self) -> None:
        for name, sect in self.doc.sections.items():
            for old, new in sect.replaced:
                self.r.warn(
                    f"{new.name!r} is set again in [{name}]; this value replaces the one "
                    f"on line {old.line}",
                    new.line,
                )
            if name != "solr" and (name in KNOWN_SECTIONS or name.startswith("process-")):
                continue
            self.r.unknown[name] = {o.name: o.value for o in sect.options.values()}
            if name == "solr":  # ep.io's, but Roost has no Solr: the service is an error
                self.r.warn("[solr] is ignored: Roost has no Solr service", sect.line)
            else:
                self.r.warn(
                    f"section [{name}] is not used by Roost; kept as is",
                    sect.line,
                    section_hint(name),
                )
        if self.doc.defaults.options:
            self.r.warn(
                "[DEFAULT] keys are only used for %(name)s interpolation", self.doc.defaults.line
            )

    def _path(self, sect: IniSection | None, key: str, where: str = "") -> str | None:
        """A path inside the app; `where` names it in `lines` for later checks."""
        got = self.r.get(sect, key)
        if got is None:
            return None
        value, line = got
        path = rel_path(value)
        if path is None or not value:
            self.r.error(f"{key} = {value!r} must be a path inside the app", line)
            return None
        self.lines[where or key] = line
        return path

    # ------------------------------------------------------------ [wsgi]

    def _web(self, wsgi: IniSection | None, custom_web: bool) -> tuple[ProcessSpec | None, bool]:
        """The WSGI process, and whether it is Django's handler by default."""
        enabled = self.r.boolean(wsgi, "enabled", True)
        got = self.r.get(wsgi, "entrypoint")
        async_type = self._async_type(wsgi)
        if not enabled or custom_web:
            if got is not None:
                why = "[process-web] replaces" if custom_web else "enabled = false turns off"
                self.r.warn(f"entrypoint is not used: {why} the WSGI server", got[1])
            return None, False
        header = f"{self.doc.filename}:{wsgi.line}" if wsgi is not None else self.doc.filename
        if got is None:
            self.lines["web"] = wsgi.line if wsgi is not None else 0
            web = ProcessSpec(
                name="web",
                kind="wsgi",
                entrypoint=DJANGO_ENTRYPOINT,
                web=True,
                source=header,
                async_type=async_type,
            )
            return web, True
        text, line = got
        entrypoint, error, hint = normalize_entrypoint(text)
        if error:
            self.r.error(error, line, hint)
            return None, False
        self.lines["entrypoint"] = self.lines["web"] = line
        web = ProcessSpec(
            name="web",
            kind="wsgi",
            entrypoint=entrypoint,
            web=True,
            source=f"{self.doc.filename}:{line}",
            async_type=async_type,
        )
        return web, False

    def _async_type(self, wsgi: IniSection | None) -> str:
        got = self.r.get(wsgi, "async_type")
        if got is None:
            return ""
        value, line = got
        if value.lower() not in ASYNC_TYPES:
            self.r.error(f"async_type = {value!r} is not supported", line, "use eventlet or gevent")
            return ""
        return value.lower()

    def _python_path(self, wsgi: IniSection | None) -> list[str]:
        got = self.r.get(wsgi, "pythonpath")
        if got is None:
            return []
        value, line = got
        self.lines["pythonpath"] = line
        paths: list[str] = []
        # A colon-separated list, like $PYTHONPATH.
        for entry in filter(None, (e.strip() for e in value.split(":"))):
            path = rel_path(entry)
            if path is None:
                self.r.error(f"pythonpath entry {entry!r} must be inside the app", line)
            elif path not in paths:
                paths.append(path)
        return paths

    def _python_version(self, wsgi: IniSection | None) -> str | None:
        got = self.r.get(wsgi, "python_version")
        if got is None:
            return None
        value, line = got
        if not re.fullmatch(r"[0-9]+(\.[0-9]+){0,2}", value):
            self.r.error(f"python_version = {value!r} is not a version", line, "e.g. 3.12")
            return None
        if value.split(".")[0] != "3":
            self.r.warn(
                f"python_version = {value}: Roost runs Python 3 only; using its default",
                line,
                "code written for Python 2 may need porting",
            )
            return None
        return value

    # ------------------------------------------------------------ Django, processes

    def _settings(self, env: dict[str, str]) -> str:
        return env.get("DJANGO_SETTINGS_MODULE", DEFAULT_SETTINGS_MODULE)

    def _django(self, env: dict[str, str]) -> DjangoSpec | None:
        sect = self.r.section("django")
        if sect is None:
            return None
        self.r.check_keys(sect, SECTION_KEYS["django"])
        self.lines["django"] = sect.line
        base = self._base(sect, "django.base")
        return DjangoSpec(
            base=base,
            append_settings=self.r.boolean(sect, "append_settings", True),
            settings_module=self._settings(env),
        )

    def _base(self, sect: IniSection, where: str, default: str = ".") -> str:
        got = self.r.get(sect, "base")
        if got is None:
            return default
        value, line = got
        path = rel_path(value)
        if path is None:
            self.r.error(f"base = {value!r} must be a directory inside the app", line)
            return default
        self.lines[where] = line
        return path

    def _processes(self) -> dict[str, ProcessSpec]:
        processes: dict[str, ProcessSpec] = {}
        for name, sect in self.doc.sections.items():
            if not name.startswith("process-"):
                continue
            pname = name[len("process-") :]
            self.r.check_keys(sect, SECTION_KEYS["process-NAME"])
            if not PROCESS_NAME.match(pname):
                self.r.error(
                    f"[{name}]: a process name may only contain letters, digits, '_' and '-'",
                    sect.line,
                )
                continue
            got = self.r.get(sect, "command")
            if got is None:
                if "command" not in sect.options:
                    self.r.error(f"[{name}] has no command", sect.line, "add command = ...")
                continue
            command, line = got
            if not command:
                self.r.error(f"[{name}] has an empty command", line)
                continue
            if pname == "web" and not any(x in command for x in LISTENERS):
                self.r.error(
                    "[process-web] replaces the WSGI server, so its command must listen on "
                    "%(unix_sock)s",
                    line,
                    "e.g. command = python server.py %(unix_sock)s (or %(port)s)",
                )
                continue
            self.r.check_runtime_text(command, line)
            cwd = self._path(sect, "cwd", f"process:{pname}") or "."
            processes[pname] = ProcessSpec(
                name=pname,
                kind="command",
                command=command,
                cwd=cwd,
                web=pname == "web",
                source=f"{self.doc.filename}:{sect.line}",
            )
        return processes

    def _celery(
        self, django: DjangoSpec | None, processes: dict[str, ProcessSpec]
    ) -> CeleryOptions | None:
        sect = self.r.section("celery")
        if sect is None:
            return None
        self.r.check_keys(sect, SECTION_KEYS["celery"])
        default_base = django.base if django is not None else "."
        options = CeleryOptions(
            djcelery=self.r.boolean(sect, "djcelery", False),
            base=self._base(sect, "celery.base", default_base),
            append_settings=self.r.boolean(sect, "append_settings", True),
        )
        if options.djcelery:
            line = sect.options["djcelery"].line
            if "celeryd" in processes:
                self.r.warn("[process-celeryd] replaces the managed celery worker", line)
            else:
                processes["celeryd"] = ProcessSpec(
                    name="celeryd",
                    kind="command",
                    command=CELERY_COMMAND,
                    cwd=options.base,
                    source=f"{self.doc.filename}:{line}",
                )
        return options


def map_epio(doc: IniDocument, diag: Diagnostics) -> EpioResult:
    """Map a parsed epio.ini; every problem goes to `diag` (nothing raises)."""
    mapper = _EpioMapper(doc, diag)
    spec = mapper.run()
    return EpioResult(spec, mapper.lines)
