"""One AppSpec from an epio.ini and/or a Procfile (pure: texts in, spec out).

Merge rule when an app has both files
-------------------------------------
* epio.ini says everything about the app (static files, services, env, cron,
  Django, symlinks, HTTP options, ...) and declares processes: the WSGI
  server ("web"), [process-NAME] daemons and the managed celery worker.
* The Procfile declares processes and the `release` command. A Procfile
  process type replaces an epio.ini process of the same name, whole (so
  `web:` replaces the WSGI server or [process-web]); a warning names what
  it replaced unless that was only the default (Django's handler, implied by
  a missing entrypoint). Process types with other names are added.
* `release:` exists only in the Procfile.
The Procfile wins because it is the newer convention: apps that add one to an
ep.io-era tree are moving their process definitions there.

app.json (Heroku/Dokku, `roost.appspec.appjson`) declares no processes; it
adds to what the other two say:
* `env` values are defaults: epio.ini's [env] wins, with a warning when the
  two give a variable different values.
* `addons` add services to epio.ini's [services] (a union).
* `cron` jobs are added to epio.ini's [cron]; a job both declare (same
  command and schedule) runs once, with a warning.
* `scripts.dokku.predeploy` runs before the Procfile's `release:` (a warning
  when both are the same command: it would run twice); `postdeploy` after the
  release serves.
* `formation` and `healthchecks` exist only in app.json; a process type they
  name that neither epio.ini nor the Procfile declares is a warning.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec

from roost.appspec.appjson import APP_JSON, AppJson, parse_app_json
from roost.appspec.epio import DJANGO_ENTRYPOINT, map_epio
from roost.appspec.errors import AppSpecError
from roost.appspec.ini import parse_ini
from roost.appspec.model import AppSpec, ProcessSpec
from roost.appspec.procfile import Procfile, parse_procfile
from roost.appspec.reader import Diagnostics, split_source


@dataclass
class Composed:
    # None when a file could not be parsed at all.
    spec: AppSpec | None
    diag: Diagnostics
    # Where epio.ini declared things (see epio.EpioResult.lines).
    lines: dict[str, int] = field(default_factory=dict)


def _is_default_web(proc: ProcessSpec) -> bool:
    return proc.kind == "wsgi" and proc.entrypoint == DJANGO_ENTRYPOINT


def _merge(spec: AppSpec, procfile: Procfile, procfile_name: str, diag: Diagnostics) -> AppSpec:
    processes = dict(spec.processes)
    django = spec.django
    for name, proc in procfile.processes.items():
        old = processes.get(name)
        if old is not None:
            if _is_default_web(old) and django is not None and django.implied:
                django = None  # Django was only assumed because nothing else served the app
            elif not _is_default_web(old):
                diag.warn(
                    f"the Procfile's {name!r} process replaces the one declared at {old.source}",
                    procfile_name,
                    split_source(proc.source)[1],
                )
        processes[name] = proc
    return msgspec.structs.replace(
        spec,
        processes=processes,
        django=django,
        release_command=procfile.release_command,
        sources=[*spec.sources, procfile_name],
    )


def _merge_app_json(spec: AppSpec, app: AppJson, name: str, diag: Diagnostics) -> AppSpec:
    env = dict(app.env)
    for key, value in spec.env.items():
        if key in env and env[key] != value:
            diag.warn(f"env.{key}: epio.ini's [env] value is used, not app.json's", name)
        env[key] = value
    cron = list(spec.cron)
    declared = {(job.command, job.schedule): job for job in cron}
    for job in app.cron:
        twin = declared.get((job.command, job.schedule))
        if twin is not None:
            diag.warn(f"{job.source}: the same job as {twin.source}; it runs once", name)
        else:
            cron.append(job)
    if app.predeploy is not None and app.predeploy == spec.release_command:
        diag.warn(
            "scripts.dokku.predeploy is the Procfile's release command too: it runs twice",
            name,
            hint="keep it in one of them",
        )
    formation, healthchecks = dict(app.formation), dict(app.healthchecks)
    singletons = sorted(app.singletons)
    if spec.processes:  # an app.json checked on its own knows no process types
        for what, named in (("formation", formation), ("healthchecks", healthchecks)):
            for proc in [p for p in named if p not in spec.processes]:
                diag.warn(f"{what}.{proc}: no such process type; ignored", name)
                del named[proc]
        for proc in [p for p in singletons if p not in spec.processes]:
            if proc not in app.formation:  # else warned above
                diag.warn(f"formation.{proc}: no such process type; ignored", name)
            singletons.remove(proc)
    return msgspec.structs.replace(
        spec,
        env=env,
        services=[*spec.services, *(s for s in app.services if s not in spec.services)],
        cron=cron,
        predeploy_command=app.predeploy,
        postdeploy_command=app.postdeploy,
        healthchecks=healthchecks,
        formation=formation,
        singletons=singletons,
        sources=[*spec.sources, name],
    )


def _finish(spec: AppSpec, diag: Diagnostics, epio_name: str) -> AppSpec:
    web = spec.processes.get("web")
    if spec.django is not None and spec.django.implied and web is not None:
        diag.warn(
            "no [wsgi] entrypoint, so Django's WSGI handler serves the app "
            f"(settings module {spec.django.settings_module!r}), as on ep.io",
            epio_name,
            split_source(web.source)[1],
            "for another framework set [wsgi] entrypoint = module:callable; "
            "for a static-only site set [wsgi] enabled = false",
        )
    # A process that failed to map already has its error; "nothing to run" would be noise.
    only_app_json = spec.sources == [APP_JSON]  # checked on its own: it declares no processes
    if not spec.processes and not spec.static and not diag.errors and not only_app_json:
        diag.error(
            "nothing to run: no web process, no other process and no static files",
            spec.sources[0] if spec.sources else "",
            0,
            "add [wsgi] entrypoint, [static] or a Procfile",
        )
    return msgspec.structs.replace(spec, warnings=list(diag.warnings))


def compose(
    epio: bytes | str | None = None,
    procfile: bytes | str | None = None,
    app_json: bytes | str | None = None,
    *,
    epio_name: str = "epio.ini",
    procfile_name: str = "Procfile",
) -> Composed:
    """Parse and map whichever files are given; never raises AppSpecError."""
    diag = Diagnostics()
    lines: dict[str, int] = {}
    spec: AppSpec | None = None
    parsed_ok = True
    if epio is not None:
        try:
            doc = parse_ini(epio, epio_name)
        except AppSpecError as exc:
            diag.errors.extend(exc.problems)
            parsed_ok = False
        else:
            result = map_epio(doc, diag)
            spec, lines = result.spec, result.lines
    proc: Procfile | None = None
    if procfile is not None:
        try:
            proc = parse_procfile(procfile, procfile_name)
        except AppSpecError as exc:
            diag.errors.extend(exc.problems)
            parsed_ok = False
    app: AppJson | None = None
    if app_json is not None:
        app = parse_app_json(app_json, diag)
        parsed_ok = parsed_ok and app is not None
    if not parsed_ok or (epio is None and procfile is None and app_json is None):
        return Composed(None, diag, lines)
    if proc is not None:
        if spec is None:
            spec = AppSpec(
                processes=proc.processes,
                release_command=proc.release_command,
                sources=[procfile_name],
            )
        else:
            spec = _merge(spec, proc, procfile_name, diag)
    if app is not None:
        spec = _merge_app_json(spec or AppSpec(), app, APP_JSON, diag)
    assert spec is not None
    return Composed(_finish(spec, diag, epio_name), diag, lines)
