"""An app.json app shaped like Dokku's documented example (name,
description, keywords, `scripts.dokku.predeploy`/`postdeploy`, `env`,
`healthchecks.web`) deploys through a real platform: its predeploy migrates
and seeds the database with the app's real credentials before the release
exists, its health check passes only on what predeploy made, and its
postdeploy runs once the release is live. A failing predeploy then fails the
next deploy with its last lines, releases nothing, and the old release keeps
serving."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, wait_until
from tests.e2e.platform import Platform, running_platform

pytestmark = pytest.mark.e2e

SEED = (
    'python manage.py shell -c "from notes.models import Note; '
    "Note.objects.get_or_create(text='made by predeploy')\""
)
# The release phase sees bundle_config (ep.io's) with the app's own database.
BUNDLE = (
    'python -c "import os; from bundle_config import config; '
    "print('bundle_config names DATABASE_URL:', config['postgres']['database'] in "
    "os.environ['DATABASE_URL'])\""
)
# -v 0: Django 5.2's shell says how many objects it imported, on stdout.
POSTDEPLOY = (
    'python manage.py shell -v 0 -c "from notes.models import Note; '
    "print('postdeploy sees', Note.objects.count(), 'notes')\""
)


def app_json(predeploy: str) -> dict[str, object]:
    """Dokku's example app.json, for a Django app on PostgreSQL."""
    return {
        "name": "notes",
        "description": "A small Django app keeping notes in PostgreSQL.",
        "keywords": ["python", "django"],
        "repository": "https://example.com/notes",
        "scripts": {
            "dokku": {
                "predeploy": predeploy,
                "postdeploy": POSTDEPLOY,
            }
        },
        "env": {
            "SECRET_TOKEN": {
                "description": "A secret key for verifying signed cookies.",
                "value": "secret",
            }
        },
        "healthchecks": {
            "web": [
                {
                    "type": "startup",
                    "name": "web check",
                    "description": "Checking that the notes page shows the seeded note",
                    "path": "/notes",
                    # Dokku's example says 5 s; a first Django request on a
                    # test machine busy with other suites can take longer.
                    "attempts": 5,
                    "timeout": 30,
                    "wait": 2,
                    "content": "made by predeploy",
                }
            ]
        },
    }


@pytest.fixture(scope="module")
def platform() -> Iterator[Platform]:
    with running_platform() as p:
        yield p


def test_dokku_app_json_predeploy_healthcheck_and_postdeploy(
    platform: Platform, tmp_path: Path
) -> None:
    app = tmp_path / "notes"
    shutil.copytree(REPO / "examples" / "django-pg", app)
    predeploy = f"python manage.py migrate --noinput && {SEED} && {BUNDLE}"
    (app / "app.json").write_text(json.dumps(app_json(predeploy), indent=2))
    platform.roost("apps", "create", "notes")
    out = platform.roost("deploy", str(app), "--app", "notes").stdout

    # The release phase ran between the copy and the release, its output
    # streamed into the deploy; the table it made serves at once (the health
    # check asks for the row predeploy wrote).
    lines = out.splitlines()
    at = next(i for i, ln in enumerate(lines) if f"running predeploy: {predeploy}" in ln)
    assert any("image copied to host" in ln for ln in lines[:at])
    assert any("Applying notes.0001_initial... OK" in ln for ln in lines[at:])
    assert any("bundle_config names DATABASE_URL: True" in ln for ln in lines[at:])
    passed = next(i for i, ln in enumerate(lines) if "exited with status 0" in ln)
    built = next(i for i, ln in enumerate(lines) if "release v1 built" in ln)
    assert at < passed < built
    assert "v1 is live" in out
    assert platform.get("notes", "/notes").json() == {"notes": ["made by predeploy"]}

    # postdeploy runs once v1 is live, in the deploy's log.
    ended = f"postdeploy {POSTDEPLOY!r} exited with status 0"

    def postdeploy_ended() -> str:
        log = platform.roost("logs", "--app", "notes", "-n", "1000").stdout
        return log if ended in log else ""

    log = str(wait_until(postdeploy_ended, 120, "the postdeploy's end"))
    assert "postdeploy sees 1 notes" in log

    # A predeploy that fails: the deploy fails with its last lines, nothing is
    # released, and v1 keeps serving.
    failing = 'echo "checking the schema"; echo "relation notes_tag is missing" >&2; exit 3'
    (app / "app.json").write_text(json.dumps(app_json(failing), indent=2))
    r = platform.roost("deploy", str(app), "--app", "notes", check=False)
    assert r.returncode != 0
    said = r.stdout + r.stderr
    assert "checking the schema" in said  # streamed as it ran
    assert f"predeploy {failing!r} exited with status 3; its last lines:" in said
    assert "relation notes_tag is missing" in said
    releases = json.loads(platform.roost("releases", "--app", "notes", "--json").stdout)
    assert [(r["version"], r["status"]) for r in releases] == [(1, "active")]
    newest = json.loads(platform.roost("deploys", "--app", "notes", "--json").stdout)[0]
    assert newest["status"] == "failed" and newest["release"] is None
    assert platform.get("notes", "/notes").json() == {"notes": ["made by predeploy"]}
