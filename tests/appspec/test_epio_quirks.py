"""The quirks real epio.ini files have, on the project's own small files
(fixtures/epio/, each written to carry the quirks of a kind of real file)."""

from __future__ import annotations

from pathlib import Path

import pytest

from roost.appspec import AppSpec, check_file
from roost.appspec.epio import DJANGO_ENTRYPOINT
from roost.appspec.model import CronJob, StaticMapping

from .epio_files import assert_checked_like_epio, fixture, fixture_files

UNPARSEABLE = {"merge_conflict.ini": (7, "merge-conflict")}
NOT_DEPLOYABLE = {
    "solr.ini": (5, "solr"),
    "entrypoint_colons.ini": (2, "more than one ':'"),
    "entrypoint_path.ini": (2, "not a Python name"),
}
FILES = fixture_files()


def spec_of(name: str) -> AppSpec:
    report = check_file(fixture(name))
    assert report.ok, report.errors
    assert report.spec is not None
    return report.spec


def test_every_expected_failure_has_its_file() -> None:
    assert set(UNPARSEABLE) | set(NOT_DEPLOYABLE) <= {f.name for f in FILES}


@pytest.mark.parametrize("path", FILES, ids=[f.name for f in FILES])
def test_every_fixture(path: Path) -> None:
    assert_checked_like_epio(path, UNPARSEABLE, NOT_DEPLOYABLE)


def test_flask_app() -> None:
    spec = spec_of("flask.ini")
    web = spec.processes["web"]
    assert (web.kind, web.entrypoint, web.web) == ("wsgi", "linkshort:app", True)
    assert spec.requirements == "requirements.txt"
    # The trailing slash of the directory goes.
    assert spec.static == [StaticMapping(url_prefix="/static", path="linkshort/static")]
    assert spec.http.gzip and spec.http.expires == {"/static": 3600}
    assert spec.services == ["postgres"]
    assert spec.django is None


def test_django_with_celery_and_custom_processes() -> None:
    spec = spec_of("django_celery.ini")
    assert list(spec.processes) == ["web", "celeryd", "celerycam"]
    assert spec.processes["web"].entrypoint == DJANGO_ENTRYPOINT
    # [process-celeryd] replaces the managed worker; placeholders stay for the runner.
    assert spec.processes["celeryd"].command == (
        "python manage.py celeryd -n worker-%(app_id)s-p%(port)s.celery -BE "
        "--pidfile=../data/celeryd.pid"
    )
    assert spec.django is not None and spec.django.base == "tracker"
    assert spec.django.settings_module == "tracker.settings"
    assert spec.celery is not None and spec.celery.djcelery and spec.celery.base == "tracker"
    assert spec.symlinks == {".apikey.txt": ".apikey-epio.txt"}
    assert StaticMapping(url_prefix="/static/admin", path="", root="admin_media") in spec.static


def test_cron_http_and_padded_cron_key() -> None:
    spec = spec_of("cron.ini")
    # "django-admin.py expire_listings  = ..." (two spaces): the key is stripped.
    assert spec.cron == [
        CronJob(
            command="django-admin.py expire_listings",
            schedule="0 0 * * *",
            source="cron.ini:20",
        ),
        CronJob(command="django-admin.py send_digest", schedule="30 6 * * 1", source="cron.ini:21"),
    ]
    assert spec.http.expires == {"/static/img": 86400, "/static/js": 600}
    assert spec.checkout_name == "rentals"
    # base = rentals/ (trailing slash), ../data and ../shortcuts/... as roots.
    assert spec.django is not None and spec.django.base == "rentals"
    assert StaticMapping(url_prefix="/media", path="", root="data") in spec.static
    assert StaticMapping(url_prefix="/static/admin", path="", root="admin_media") in spec.static


def test_static_only_sites() -> None:
    for name in ("static_site.ini", "static_indexes.ini"):
        spec = spec_of(name)
        assert spec.processes == {}
        assert spec.static[0].url_prefix == "/"
    assert not spec_of("static_site.ini").static_directory_indexes
    # "/ = ./", _directory_indexes, and no newline at the end of the file.
    spec = spec_of("static_indexes.ini")
    assert spec.static_directory_indexes
    assert spec.static == [StaticMapping(url_prefix="/", path=".")]


def test_custom_web_process() -> None:
    spec = spec_of("custom_web.ini")
    web = spec.processes["web"]
    assert (web.kind, web.web, web.command, web.cwd) == (
        "command",
        True,
        "python server.py %(unix_sock)s",
        ".",
    )
    assert list(spec.processes) == ["web"]


def test_data_and_site_packages_roots() -> None:
    spec = spec_of("roots.ini")
    assert spec.static == [
        StaticMapping(url_prefix="/static", path="static"),
        StaticMapping(url_prefix="/static/admin", path="", root="admin_media"),
        StaticMapping(url_prefix="/static/mptt", path="mptt/static/mptt", root="site_packages"),
        StaticMapping(url_prefix="/media", path="", root="data"),
    ]
    # A commented-out cron line with a bare '%' does not break interpolation.
    assert spec.cron == []
    spec = spec_of("data_roots.ini")
    assert spec.static == [
        StaticMapping(url_prefix="/static", path="static", root="data"),
        StaticMapping(url_prefix="/media", path="media", root="data"),
    ]
    assert spec.env == {"IPYTHON_DIR": "~/data/.ipython"}
    assert spec.redis_memory_mb == 16
    # The file carries a UTF-8 comment (a typographic apostrophe), as real ones do.
    assert "\u2019" in fixture("data_roots.ini").read_text(encoding="utf-8")


def test_file_target_and_basic_auth() -> None:
    spec = spec_of("file_and_auth.ini")
    assert StaticMapping(url_prefix="/humans.txt", path="humans.txt", is_file=True) in spec.static
    # "expires-/static/v=86400": no spaces around '='.
    assert spec.http.expires == {"/static/v": 86400}
    assert spec.basic_auth is not None
    assert (spec.basic_auth.users, spec.basic_auth.realm) == ({"staff": "opensesame"}, "Staff Only")


def test_duplicate_sections_merge_and_last_key_wins() -> None:
    spec = spec_of("merged_sections.ini")
    assert [(m.url_prefix, m.path) for m in spec.static] == [
        ("/static", "files/static"),
        ("/static/admin", ""),
    ]
    # The stray key under [static] is reported with the commented header that caused it.
    report = check_file(fixture("merged_sections.ini"))
    stray = [w for w in report.warnings if "DJANGO_SETTINGS_MODULE" in w.message]
    assert len(stray) == 1 and "'[env]' on line 17 is commented out" in stray[0].hint
    assert spec.unknown == {"static": {"DJANGO_SETTINGS_MODULE": "production_settings"}}
    # The empty [cron] at the end of the file (no final newline) is no job.
    assert spec.cron == []


def test_crlf_files() -> None:
    assert b"\r\n" in fixture("crlf.ini").read_bytes()
    spec = spec_of("crlf.ini")
    assert spec.basic_auth is not None and spec.basic_auth.users == {"reader": "letmein"}
    assert spec.checkout_name == "journal"
    # [static] merged across its two headers; the commented entry is no mapping.
    assert spec.static == [StaticMapping(url_prefix="/static", path="journal/static")]


def test_trailing_whitespace_is_stripped() -> None:
    spec = spec_of("trailing_space.ini")
    assert spec.checkout_name == "game"
    assert spec.django is not None and spec.django.base == "game_server"


def test_django_implied_without_django_section() -> None:
    spec = spec_of("django_implied.ini")
    assert spec.processes["web"].entrypoint == DJANGO_ENTRYPOINT
    assert spec.django is not None and spec.django.implied
    assert spec.django.settings_module == "production_settings"
