"""Every real epio.ini in ../shared/epio-corpus: parsed, mapped, and what fails says where."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

from roost.appspec import AppSpec, check_file
from roost.appspec.epio import DJANGO_ENTRYPOINT
from roost.appspec.ini import parse_ini
from roost.appspec.model import CronJob, StaticMapping

from .conftest import corpus_files

FILES = corpus_files()

# The one file ConfigParser itself cannot read.
UNPARSEABLE = {"joskid__django.org.tr.ini": (13, "merge-conflict")}
# Files that parse but ask for something Roost cannot do: (line, words in the error).
NOT_DEPLOYABLE = {
    "pudo-attic__eutr.ini": (7, "solr"),
    "rcrowley__nomblr.ini": (13, "solr"),
    "ajford__RGVRSEF.ini": (5, "more than one ':'"),
    "paimoe__fuelwatch.ini": (2, "not a Python name"),
}


def by_name(name: str) -> Path:
    return next(f for f in FILES if f.name == name)


def spec_of(name: str) -> AppSpec:
    report = check_file(by_name(name))
    assert report.ok, report.errors
    assert report.spec is not None
    return report.spec


def test_the_corpus_is_all_there() -> None:
    assert len(FILES) >= 98
    assert set(UNPARSEABLE) | set(NOT_DEPLOYABLE) <= {f.name for f in FILES}


@pytest.mark.parametrize("path", FILES, ids=[f.name for f in FILES])
def test_every_corpus_file(path: Path) -> None:
    report = check_file(path)
    if path.name in UNPARSEABLE:
        line, words = UNPARSEABLE[path.name]
        assert report.spec is None
        assert [(p.file, p.line) for p in report.errors] == [(path.name, line)]
        assert words in report.errors[0].message
        return
    # Everything else parses as ConfigParser would and maps to a spec.
    parse_ini(path.read_bytes(), path.name)
    assert report.spec is not None, report.errors
    if path.name in NOT_DEPLOYABLE:
        line, words = NOT_DEPLOYABLE[path.name]
        assert [(p.file, p.line) for p in report.errors] == [(path.name, line)]
        assert words in report.errors[0].message
    else:
        assert report.errors == []
        assert report.ok
    # Warnings always say where.
    assert all(w.file == path.name for w in report.warnings)
    # The spec travels over the wire: it must survive msgpack unchanged.
    wire = msgspec.msgpack.encode(report.spec)
    assert msgspec.msgpack.decode(wire, type=AppSpec) == report.spec


def test_corpus_flask_app() -> None:
    spec = spec_of("mdeous__shorty.ini")
    web = spec.processes["web"]
    assert (web.kind, web.entrypoint, web.web) == ("wsgi", "shorty:app", True)
    assert spec.requirements == "requirements.txt"
    assert spec.static == [StaticMapping(url_prefix="/static", path="shorty/static")]
    assert spec.http.gzip and spec.http.expires == {"/static": 3600}
    assert spec.services == ["postgres"]
    assert spec.django is None


def test_corpus_django_with_celery_and_custom_processes() -> None:
    spec = spec_of("coderanger__glitchtools.ini")
    assert list(spec.processes) == ["web", "celeryd", "celerycam"]
    assert spec.processes["web"].entrypoint == DJANGO_ENTRYPOINT
    # [process-celeryd] replaces the managed worker; placeholders stay for the runner.
    assert spec.processes["celeryd"].command == (
        "python manage.py celeryd -n fakehost-%(app_id)s-p%(port)s.celery -BE "
        "--pidfile=../data/celeryd.pid"
    )
    assert spec.django is not None and spec.django.base == "glitchtools"
    assert spec.django.settings_module == "glitchtools.settings"
    assert spec.celery is not None and spec.celery.djcelery and spec.celery.base == "glitchtools"
    assert spec.symlinks == {".glitchapi.txt": ".glitchapi-epio.txt"}
    assert StaticMapping(url_prefix="/static/admin", path="", root="admin_media") in spec.static


def test_corpus_cron_http_and_padded_cron_key() -> None:
    spec = spec_of("liorsion__Pairup-Israel.ini")
    assert spec.cron == [
        CronJob(
            command="django-admin.py cleanupregistration",
            schedule="0 0 * * *",
            source="liorsion__Pairup-Israel.ini:24",
        ),
        CronJob(
            command="django-admin.py cleanup",
            schedule="0 0 * * *",
            source="liorsion__Pairup-Israel.ini:25",
        ),
        CronJob(
            command="django-admin.py process_partners",
            schedule="0 0 * * *",
            source="liorsion__Pairup-Israel.ini:26",
        ),
    ]
    assert spec.http.expires == {"/static/images": 86400, "/static/js": 86400, "/static/css": 86400}
    assert spec.checkout_name == "findapartner"
    assert spec.django is not None and spec.django.base == "findapartner"


def test_corpus_static_only_sites() -> None:
    for name in ("bfirsh__fir.sh.ini", "diveintomark__diveintopython3.ini", "pypy__pypy.org.ini"):
        spec = spec_of(name)
        assert spec.processes == {}
        assert spec.static[0].url_prefix == "/"
    assert spec_of("diveintomark__diveintopython3.ini").static_directory_indexes
    assert spec_of("pypy__pypy.org.ini").static == [StaticMapping(url_prefix="/", path=".")]


def test_corpus_custom_web_process() -> None:
    spec = spec_of("smugen__epio-custom-web-process.ini")
    web = spec.processes["web"]
    assert (web.kind, web.web, web.command, web.cwd) == (
        "command",
        True,
        "python server.py %(unix_sock)s",
        ".",
    )
    assert list(spec.processes) == ["web"]


def test_corpus_data_and_site_packages_roots() -> None:
    spec = spec_of("tapetersen__aksite.ini")
    assert spec.static == [
        StaticMapping(url_prefix="/static", path="static"),
        StaticMapping(url_prefix="/static/admin", path="", root="admin_media"),
        StaticMapping(
            url_prefix="/static/feincms", path="feincms/static/feincms", root="site_packages"
        ),
        StaticMapping(url_prefix="/media", path="", root="data"),
    ]
    spec = spec_of("benspaulding__django-epio-example.ini")
    assert spec.static == [
        StaticMapping(url_prefix="/static", path="static", root="data"),
        StaticMapping(url_prefix="/media", path="media", root="data"),
    ]
    assert spec.env == {"IPYTHON_DIR": "~/data/.ipython"}
    assert spec.redis_memory_mb == 16


def test_corpus_file_target_and_basic_auth() -> None:
    spec = spec_of("pygraz__old-flask-website.ini")
    assert StaticMapping(url_prefix="/tech.txt", path="tech.txt", is_file=True) in spec.static
    assert spec.http.expires == {"/static/s": 86400}
    spec = spec_of("oinopion__toolbox.ini")
    assert spec.basic_auth is not None
    assert (spec.basic_auth.users, spec.basic_auth.realm) == ({"xteam": "xteamrocks"}, "X-Toolbox")


def test_corpus_duplicate_sections_merge_and_last_key_wins() -> None:
    spec = spec_of("elegion__iphonefood.ini")
    assert [(m.url_prefix, m.path) for m in spec.static] == [
        ("/static", "files/static"),
        ("/static/admin", ""),
    ]
    # The stray key under [static] is reported with the commented header that caused it.
    report = check_file(by_name("elegion__iphonefood.ini"))
    stray = [w for w in report.warnings if "DJANGO_SETTINGS_MODULE" in w.message]
    assert len(stray) == 1 and "'[env]' on line 45 is commented out" in stray[0].hint
    assert spec.unknown == {"static": {"DJANGO_SETTINGS_MODULE": "production_settings"}}


def test_corpus_crlf_files() -> None:
    assert b"\r\n" in by_name("gladson__django_epio.ini").read_bytes()
    spec = spec_of("gladson__django_epio.ini")
    assert spec.basic_auth is not None and spec.basic_auth.users == {"blogs": "gladson"}
    assert spec.checkout_name == "gladson"


def test_corpus_trailing_whitespace_is_stripped() -> None:
    assert spec_of("rochacon__procrastine.ini").checkout_name == "procrastine"
    django = spec_of("no-rain-code__fuchsjagd-server.ini").django
    assert django is not None and django.base == "fuchsjagd_server"


def test_corpus_django_implied_without_django_section() -> None:
    spec = spec_of("madjar__macleod.ini")
    assert spec.processes["web"].entrypoint == DJANGO_ENTRYPOINT
    assert spec.django is not None and spec.django.implied
    assert spec.django.settings_module == "production_settings"
