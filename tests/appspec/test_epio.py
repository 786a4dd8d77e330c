"""epio.ini sections mapped to the AppSpec: one test per behaviour KEYS.md describes."""

from __future__ import annotations

import pytest

from roost.appspec import AppSpec, AppSpecError, parse_epio
from roost.appspec.compose import Composed, compose
from roost.appspec.epio import DJANGO_ENTRYPOINT, normalize_entrypoint
from roost.appspec.model import BasicAuth, DjangoSpec, ProcessSpec, StaticMapping


def composed(text: str) -> Composed:
    return compose(epio=text)


def spec(text: str) -> AppSpec:
    return parse_epio(text)


def warnings(text: str) -> list[tuple[int, str, str]]:
    result = composed(text)
    assert result.diag.errors == []
    return [(w.line, w.message, w.hint) for w in result.diag.warnings]


def error(text: str) -> tuple[int, str, str]:
    with pytest.raises(AppSpecError) as info:
        parse_epio(text)
    [problem] = info.value.problems
    assert problem.file == "epio.ini"
    return problem.line, problem.message, problem.hint


# ---------------------------------------------------------------- [wsgi]


def test_entrypoint_and_requirements() -> None:
    s = spec("[wsgi]\nentrypoint = pytips.app:app\nrequirements = requirements/epio.txt\n")
    assert s.processes == {
        "web": ProcessSpec(
            name="web", kind="wsgi", entrypoint="pytips.app:app", web=True, source="epio.ini:2"
        )
    }
    assert s.requirements == "requirements/epio.txt"
    assert s.web_process is s.processes["web"]
    assert s.sources == ["epio.ini"]


def test_entrypoint_without_callable_defaults_to_application() -> None:
    assert spec("[wsgi]\nentrypoint = navercomicfeed\n").processes["web"].entrypoint == (
        "navercomicfeed:application"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("app:app", "app:app"),
        ("a.b.c:make_app()", "a.b.c:make_app()"),
        ("mod:obj.attr", "mod:obj.attr"),
        ("wsgi", "wsgi:application"),
    ],
)
def test_normalize_entrypoint(text: str, expected: str) -> None:
    assert normalize_entrypoint(text) == (expected, "", "")


@pytest.mark.parametrize(
    ("text", "words", "hint"),
    [
        ("app:RGVRSEF:app", "more than one ':'", "e.g. RGVRSEF:app"),
        ("app:site/main", "not a Python name", "dots in the module path"),
        ("wsgi.py", "is a file name", "entrypoint = wsgi:application"),
        ("my-app:app", "not a Python module path", "use dots"),
        ("app:", "not a Python name", ""),
        ("app:class", "not a Python name", ""),
    ],
)
def test_bad_entrypoints_are_errors_at_their_line(text: str, words: str, hint: str) -> None:
    line, message, got_hint = error(f"[wsgi]\nrequirements = r.txt\nentrypoint = {text}\n")
    assert line == 3 and words in message and hint in got_hint


def test_django_handler_is_the_default_entrypoint_with_django() -> None:
    s = spec("[wsgi]\nrequirements = r.txt\n[django]\nbase = ./web/\nappend_settings = false\n")
    assert s.processes["web"].entrypoint == DJANGO_ENTRYPOINT
    assert s.django == DjangoSpec(base="web", append_settings=False, settings_module="settings")


def test_django_handler_is_implied_without_django_section() -> None:
    result = composed("[wsgi]\nrequirements = r.txt\n[env]\nDJANGO_SETTINGS_MODULE = prod\n")
    assert result.spec is not None
    assert result.spec.processes["web"].entrypoint == DJANGO_ENTRYPOINT
    assert result.spec.django == DjangoSpec(implied=True, settings_module="prod")
    [warning] = result.diag.warnings
    assert warning.line == 1 and "Django's WSGI handler" in warning.message


def test_no_wsgi_section_still_serves_django() -> None:
    s = spec("[django]\nbase = toolbox\n")
    assert s.processes["web"].entrypoint == DJANGO_ENTRYPOINT
    assert s.django is not None and not s.django.implied


def test_enabled_false_is_a_static_only_site() -> None:
    s = spec("[static]\n/ = output/\n[wsgi]\nenabled=false\n")
    assert s.processes == {} and s.django is None
    assert s.static == [StaticMapping(url_prefix="/", path="output")]


def test_enabled_true_and_booleans_any_case() -> None:
    s = spec("[wsgi]\nenabled = True\nentrypoint = app:app\n[services]\nredis = TRUE\n")
    assert "web" in s.processes and s.services == ["redis"]


def test_a_site_with_nothing_to_run_is_an_error() -> None:
    assert "nothing to run" in error("[wsgi]\nenabled = false\n")[1]


def test_bad_boolean() -> None:
    assert error("[wsgi]\nentrypoint = a:b\nenabled = nope\n")[:2] == (
        3,
        "enabled = 'nope' is not a boolean",
    )


def test_pythonpath_is_a_colon_separated_list() -> None:
    s = spec("[wsgi]\nentrypoint = a:b\npythonpath = lib:something/subdir:./src/:lib\n")
    assert s.python_path == ["lib", "something/subdir", "src"]
    assert "inside the app" in error("[wsgi]\nentrypoint = a:b\npythonpath = lib:../x\n")[1]


def test_async_type_and_python_version() -> None:
    result = composed("[wsgi]\nentrypoint = a:b\nasync_type = eventlet\npython_version = 2.7\n")
    assert result.spec is not None
    assert result.spec.processes["web"].async_type == "eventlet"
    assert result.spec.python_version is None  # Roost has no Python 2
    assert "Python 3 only" in result.diag.warnings[0].message
    assert spec("[wsgi]\nentrypoint = a:b\npython_version = 3.12\n").python_version == "3.12"
    assert error("[wsgi]\nentrypoint = a:b\nasync_type = tornado\n")[0] == 3


def test_misspelled_and_misplaced_wsgi_keys_get_hints() -> None:
    [(line, message, hint)] = warnings("[wsgi]\nentrypoint = a:b\nentry_point = wsgi.py\n")
    assert line == 3 and "'entry_point'" in message and hint == "did you mean 'entrypoint'?"
    [(_, _, hint)] = warnings("[wsgi]\nentrypoint = a:b\ndjango_base = ./web/\n")
    assert hint == "did you mean 'base' in [django]?"


def test_bare_web_colon_app_line_gets_an_entrypoint_hint() -> None:
    result = composed("[wsgi]\nweb:app\nrequirements = r.txt\n")
    assert result.spec is not None and result.spec.unknown == {"wsgi": {"web": "app"}}
    hint = result.diag.warnings[0].hint
    assert "entrypoint = web:app" in hint


# ---------------------------------------------------------------- processes, celery


def test_process_sections() -> None:
    s = spec(
        "[wsgi]\nentrypoint = a:b\n"
        "[process-celerybeat]\ncommand = python manage.py celerybeat --pidfile=../data/b.pid\n"
        "[process-worker]\ncommand = ./work %(port)s\ncwd = ./jobs/\n"
    )
    assert list(s.processes) == ["web", "celerybeat", "worker"]
    worker = s.processes["worker"]
    assert (worker.kind, worker.command, worker.cwd, worker.web, worker.source) == (
        "command",
        "./work %(port)s",
        "jobs",
        False,
        "epio.ini:5",
    )


def test_process_web_replaces_wsgi_and_must_listen() -> None:
    s = spec(
        "[wsgi]\nentrypoint = dummy:dummy\n[process-web]\ncommand = python s.py %(unix_sock)s\n"
    )
    assert list(s.processes) == ["web"] and s.processes["web"].kind == "command"
    assert s.processes["web"].web
    line, message, hint = error("[process-web]\ncommand = python server.py\n")
    assert line == 2 and "%(unix_sock)s" in message and "%(unix_sock)s" in hint


def test_process_without_command_or_with_bad_name() -> None:
    assert error("[wsgi]\nentrypoint = a:b\n[process-x]\ncwd = .\n")[:2] == (
        3,
        "[process-x] has no command",
    )
    assert "process name" in error("[wsgi]\nentrypoint = a:b\n[process-a b]\ncommand = x\n")[1]
    assert "inside the app" in error("[process-x]\ncommand = x\ncwd = ../elsewhere\n")[1]


def test_djcelery_adds_a_managed_worker_in_the_celery_base() -> None:
    s = spec("[django]\nbase = proj\n[celery]\ndjcelery = true\n")
    assert s.processes["celeryd"] == ProcessSpec(
        name="celeryd",
        kind="command",
        command="python manage.py celeryd",
        cwd="proj",
        source="epio.ini:4",
    )
    assert s.celery is not None and s.celery.base == "proj"
    s = spec("[django]\nbase = .\n[celery]\nbase = make_my_badge\ndjcelery = true\n")
    assert s.processes["celeryd"].cwd == "make_my_badge"
    assert "celeryd" not in spec("[django]\nbase = .\n[celery]\nbase = .\n").processes


def test_process_celeryd_replaces_the_managed_worker() -> None:
    text = (
        "[django]\nbase = .\n[celery]\ndjcelery = true\n[process-celeryd]\ncommand = celery -n x\n"
    )
    assert spec(text).processes["celeryd"].command == "celery -n x"
    assert warnings(text)[-1][1] == "[process-celeryd] replaces the managed celery worker"


# ---------------------------------------------------------------- [static], [symlinks]


def sm(prefix: str, path: str, root: str = "app", is_file: bool = False) -> StaticMapping:
    return StaticMapping(url_prefix=prefix, path=path, root=root, is_file=is_file)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("key", "value", "mapping"),
    [
        ("/static/", "static/", sm("/static", "static")),
        ("/media", "../data", sm("/media", "", "data")),
        ("/m", "../data/user/", sm("/m", "user", "data")),
        ("/u", "%(data_directory)s/uploads/", sm("/u", "uploads", "data")),
        ("/h", "~/data/x", sm("/h", "x", "data")),
        ("/a", "../shortcuts/django-admin-media/", sm("/a", "", "admin_media")),
        ("/a", "%(django_admin_media)s/", sm("/a", "", "admin_media")),
        ("/a", "%(django_admin_media)s/css", sm("/a", "css", "admin_media")),
        ("/", "./", sm("/", ".")),
        ("/media/admin/", "../shortcuts/django-admin-media", sm("/media/admin", "", "admin_media")),
        ("/robots.txt", "static/robots.txt", sm("/robots.txt", "static/robots.txt", is_file=True)),
        ("/static/CSS", "css", sm("/static/CSS", "css")),
    ],
)
def test_static_mappings(key: str, value: str, mapping: StaticMapping) -> None:
    s = spec(f"[wsgi]\nenabled = false\n[static]\n{key} = {value}\n")
    assert s.static == [mapping]


@pytest.mark.parametrize(
    "value",
    [
        "/etc",
        "../elsewhere",
        "../data/../../x",
        "%(port)s/x",
        "../pyenv/lib/python2.7/site-packages/../../..",
    ],
)
def test_static_targets_outside_the_app_are_errors(value: str) -> None:
    assert error(f"[static]\n/s = {value}\n")[0] == 2


def test_static_directory_indexes_and_unknown_options() -> None:
    s = spec("[static]\n/ = ./\n_directory_indexes = true\n[wsgi]\nenabled = false\n")
    assert s.static_directory_indexes
    assert warnings("[static]\n/ = ./\n_gzip = true\n[wsgi]\nenabled = false\n")[0][0] == 3


def test_static_key_without_slash_is_served_with_a_warning() -> None:
    text = "[wsgi]\nentrypoint = m:app\n[static]\nmusicsaver/static = static\n"
    assert spec(text).static == [StaticMapping(url_prefix="/musicsaver/static", path="static")]
    assert "does not start with '/'" in warnings(text)[0][1]


def test_keys_under_a_commented_out_header_are_explained() -> None:
    text = (
        "[wsgi]\nentrypoint = a:b\n[static]\n/static = static\n"
        "# [env]\n# # Use a different settings module\nDJANGO_SETTINGS_MODULE = prod\n"
        "[symlinks]\n#[django]\nbase = .\n"
    )
    result = composed(text)
    assert result.spec is not None and result.spec.symlinks == {}
    assert result.spec.env == {}  # ep.io did not apply them either
    assert result.spec.unknown == {
        "static": {"DJANGO_SETTINGS_MODULE": "prod"},
        "symlinks": {"base": "."},
    }
    hints = {w.line: w.hint for w in result.diag.warnings}
    assert "the header '[env]' on line 5 is commented out" in hints[7]
    assert "the header '[django]' on line 9 is commented out" in hints[10]


def test_symlinks() -> None:
    s = spec(
        "[wsgi]\nentrypoint = a:b\n[symlinks]\n"
        "pyconde/settings.py = pyconde/conf/epio.py\n"
        "collected-assets/cache = ../data/compress-cache/\n"
        "src/local.py = %(data_directory)s/local_settings.py\n"
    )
    assert s.symlinks == {
        "pyconde/settings.py": "pyconde/conf/epio.py",
        "collected-assets/cache": "%(data_directory)s/compress-cache",
        "src/local.py": "%(data_directory)s/local_settings.py",
    }
    assert error("[symlinks]\n../out = x\n")[0] == 2
    assert error("[symlinks]\nx = /etc/passwd\n")[0] == 2
    assert "app or the data directory" in error("[symlinks]\nx = %(django_admin_media)s\n")[1]


# ---------------------------------------------------------------- services, env, ...


def test_services_and_redis_memory() -> None:
    s = spec(
        "[wsgi]\nentrypoint = a:b\n[services]\npostgres = false\nredis = True\n"
        "[redis]\nmemory = 16\n"
    )
    assert (s.services, s.redis_memory_mb) == (["redis"], 16)
    assert "no effect" in warnings("[wsgi]\nentrypoint = a:b\n[redis]\nmemory = 16\n")[0][1]
    assert error("[wsgi]\nentrypoint = a:b\n[redis]\nmemory = lots\n")[0] == 4
    # An S3 bucket of its own (roost.datadir.s3plan).
    assert spec("[wsgi]\nentrypoint = a:b\n[services]\ns3 = true\n").services == ["s3"]


def test_unsupported_service_is_an_error_naming_the_line() -> None:
    line, message, hint = error(
        "[wsgi]\nentrypoint = a:b\n[services]\npostgres = true\nsolr = true\n"
    )
    assert (line, message) == (5, "service 'solr' is not supported by Roost")
    assert "postgres, redis and s3" in hint
    # Switched off, it is only a warning; [solr] itself is kept and warned about.
    result = composed("[wsgi]\nentrypoint = a:b\n[services]\nsolr = false\n[solr]\nmemory = 128\n")
    assert result.diag.errors == []
    assert result.spec is not None and result.spec.unknown["solr"] == {"memory": "128"}


def test_env_keeps_case_quotes_and_placeholders() -> None:
    result = composed(
        '[wsgi]\nentrypoint = a:b\n[env]\nMARCEL_SETTINGS="production.cfg"\n'
        "IPYTHON_DIR = ~/data/.ipython\nUPLOADS = %(data_directory)s/up\nPATH = /bin\n"
    )
    assert result.spec is not None
    assert result.spec.env == {
        "MARCEL_SETTINGS": '"production.cfg"',
        "IPYTHON_DIR": "~/data/.ipython",
        "UPLOADS": "%(data_directory)s/up",
        "PATH": "/bin",
    }
    messages = [w.message for w in result.diag.warnings]
    assert any("quotes are part of the value" in m for m in messages)
    assert any("PATH is set by Roost" in m for m in messages)


def test_checkout_directory_name() -> None:
    assert (
        spec("[wsgi]\nentrypoint = a:b\n[checkout]\ndirectory_name = procrastine \n").checkout_name
        == "procrastine"
    )
    assert spec("[wsgi]\nentrypoint = a:b\n[checkout]\n").checkout_name == "app"
    assert error("[wsgi]\nentrypoint = a:b\n[checkout]\ndirectory_name = a/b\n")[0] == 4


def test_http_options() -> None:
    s = spec(
        "[wsgi]\nentrypoint = a:b\n[http]\ngzip = true\n"
        "expires-/static/ = 300\nexpires-/media=3600\n"
    )
    assert s.http.gzip and s.http.expires == {"/static": 300, "/media": 3600}
    assert error("[wsgi]\nentrypoint = a:b\n[http]\nexpires-/static = soon\n")[0] == 4
    assert warnings("[wsgi]\nentrypoint = a:b\n[http]\nbrotli = true\n")[0][0] == 4


def test_basic_auth() -> None:
    s = spec("[wsgi]\nentrypoint = a:b\n[basic_auth]\nxteam = xteamrocks\n_realm = X-Toolbox\n")
    assert s.basic_auth == BasicAuth(users={"xteam": "xteamrocks"}, realm="X-Toolbox")
    s = spec("[wsgi]\nentrypoint = a:b\n[basic_auth]\nblogs = gladson\n")
    assert s.basic_auth == BasicAuth(users={"blogs": "gladson"}, realm="Restricted")
    # Only commented examples: no auth at all.
    assert spec("[wsgi]\nentrypoint = a:b\n[basic_auth]\n# me = secret\n").basic_auth is None


def test_cron_command_is_the_key_and_the_schedule_is_validated() -> None:
    s = spec(
        "[wsgi]\nentrypoint = a:b\n[cron]\nmanage.py update_metrics -v0 = */30 * * * *\n"
        "update_posts.sh = 0-59/1 * * * *\nwincstar/manage.py import = 01 04 * * *\n"
    )
    assert [(j.command, j.schedule, j.source) for j in s.cron] == [
        ("manage.py update_metrics -v0", "*/30 * * * *", "epio.ini:4"),
        ("update_posts.sh", "0-59/1 * * * *", "epio.ini:5"),
        ("wincstar/manage.py import", "01 04 * * *", "epio.ini:6"),
    ]
    line, message, hint = error("[wsgi]\nentrypoint = a:b\n[cron]\n./sync = */5 * * *\n")
    assert line == 4 and "5 fields" in message and "command is the key" in hint
    assert error("[wsgi]\nentrypoint = a:b\n[cron]\nx = 61 * * * *\n")[0] == 4


def test_cron_overlap_policy_follows_the_schedule() -> None:
    s = spec(
        "[wsgi]\nentrypoint = a:b\n[cron]\n./sync = */5 * * * * overlap=skip\n"
        "./report = @daily overlap=queue\n./tidy = 0 1 * * *\n"
    )
    assert [(j.command, j.schedule, j.overlap) for j in s.cron] == [
        ("./sync", "*/5 * * * *", "skip"),
        ("./report", "0 0 * * *", "queue"),
        ("./tidy", "0 1 * * *", "allow"),
    ]
    line, message, _ = error("[wsgi]\nentrypoint = a:b\n[cron]\n./x = * * * * * overlap=no\n")
    assert line == 4 and "overlap=queue" in message


def test_unknown_sections_are_kept_and_warned_about() -> None:
    result = composed("[wsgi]\nentrypoint = a:b\n[launcher]\npackage = myapp\n[WSGI]\nx = 1\n")
    assert result.spec is not None
    assert result.spec.unknown == {"launcher": {"package": "myapp"}, "WSGI": {"x": "1"}}
    hints = {w.line: (w.message, w.hint) for w in result.diag.warnings}
    assert "not used by Roost" in hints[3][0]
    assert hints[5][1] == "section names are case-sensitive: write [wsgi]"


def test_duplicate_keys_warn() -> None:
    [(line, message, _)] = warnings("[wsgi]\nentrypoint = a:b\n[static]\n/s = a\n/s = b\n")
    assert line == 5 and "replaces the one on line 4" in message


def test_multiline_values_are_errors_where_one_line_is_needed() -> None:
    line, message, hint = error("[wsgi]\nentrypoint = a:b\n   # old: c:d\n")
    assert line == 2 and "continues onto line 3" in message and "indentation" in hint


def test_every_problem_is_reported_at_once() -> None:
    result = composed("[wsgi]\nentrypoint = a:b:c\n[services]\nsolr = true\n[cron]\nx = y\n")
    assert sorted(p.line for p in result.diag.errors) == [2, 4, 6]


def test_stray_settings_module_under_django_or_symlinks_is_not_applied() -> None:
    # DamianZaremba/logapp and Codrspace: ep.io ignored these, and so does Roost (with a hint).
    result = composed(
        "[django]\nbase = .\nDJANGO_SETTINGS_MODULE = prod\n"
        "[symlinks]\nDJANGO_SETTINGS_MODULE = x\n"
    )
    assert result.spec is not None and result.spec.django is not None
    assert result.spec.django.settings_module == "settings"
    assert result.spec.symlinks == {}
    hints = [w.hint for w in result.diag.warnings]
    assert (
        hints[0]
        == hints[1]
        == ("'DJANGO_SETTINGS_MODULE' looks like an environment variable; those go in [env]")
    )


def test_paths_holding_runtime_variables_are_refused_where_a_file_is_needed() -> None:
    assert error("[wsgi]\nentrypoint = a:b\nrequirements = %(data_directory)s/r.txt\n")[0] == 3
    assert error("[wsgi]\nentrypoint = a:b\npythonpath = %(data_directory)s/lib\n")[0] == 3


def test_default_section_is_only_for_interpolation() -> None:
    result = composed("[DEFAULT]\nsub = site\n[wsgi]\nentrypoint = %(sub)s.app:app\n")
    assert result.spec is not None
    assert result.spec.processes["web"].entrypoint == "site.app:app"
    assert [(w.line, w.message) for w in result.diag.warnings] == [
        (1, "[DEFAULT] keys are only used for %(name)s interpolation")
    ]


@pytest.mark.parametrize(
    ("header", "hint"),
    [
        ("[ wsgi ]", "remove the spaces inside the brackets: [wsgi]"),
        ("[wgsi]", "did you mean [wsgi]?"),
        ("[process]", "a custom process is written [process-NAME], e.g. [process-worker]"),
        ("[launcher]", ""),
    ],
)
def test_unknown_section_hints(header: str, hint: str) -> None:
    [(line, message, got)] = warnings(f"[wsgi]\nentrypoint = a:b\n{header}\nx = 1\n")
    assert line == 3 and "not used by Roost" in message and got == hint


def test_a_commented_cron_line_with_percent_signs_would_still_parse() -> None:
    # tapetersen/aksite has `# ... date +%d/%m ...` commented out; live, py2 kept it verbatim.
    s = spec("[wsgi]\nentrypoint = a:b\n[cron]\n./backup `date +%d/%m` = 0 3 * * *\n")
    assert s.cron[0].command == "./backup `date +%d/%m`"


def test_admin_media_variable_outside_static_is_kept_with_a_warning() -> None:
    text = "[wsgi]\nentrypoint = a:b\n[env]\nADMIN = %(django_admin_media)s\n"
    assert spec(text).env == {"ADMIN": "%(django_admin_media)s"}
    assert warnings(text)[0][:2] == (
        4,
        "%(django_admin_media)s is only understood in [static]; here it stays as written",
    )
