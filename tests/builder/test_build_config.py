"""Build-time configuration: the import check and collectstatic see the app's
config vars and a `bundle_config` rendered from its service credentials; none
of it reaches the image, and nothing of it is left when the build ends.

Real builds (uv, the build user's sandbox); the configuration comes from the
`env_source` the manager gives a build (a controller's BuildEnv in the daemon).
"""

from __future__ import annotations

import hashlib
import shutil
import stat
from pathlib import Path

import pytest
from tests.builder.blobs import blob_bytes

from roost.appspec import AppSpec
from roost.builder import buildconfig as bc
from roost.builder.errors import BuildError
from roost.builder.pipeline import Build
from roost.builder.workspace import Workspace
from roost.images.manifest import read_manifest

from .conftest import EXAMPLES, tar_dir
from .test_build import APP_ID, RELEASE_PHASE, leftovers


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


PASSWORD = "pw-only-in-the-build-7f3a9c"
ENV = {
    "DATABASE_URL": f"postgres://app:{PASSWORD}@10.9.8.7:6543/appdb",
    "SECRET_KEY": "from-config-vars",
}
# ep.io's documented way: credentials read at import, as Django settings did.
# The source names only digests: the password must reach the image from nowhere.
APP_PY = f"""
import hashlib
import os
from bundle_config import config

def sha(text):
    return hashlib.sha256(text.encode()).hexdigest()

DB = config["postgres"]
assert sha(DB["password"]) == {sha(PASSWORD)!r} and DB["port"] == 6543, "wrong postgres"
assert config["core"]["app_id"] == "hello"
assert sha(os.environ["SECRET_KEY"]) == {sha(ENV["SECRET_KEY"])!r}
assert not os.access({{dir!r}}, os.W_OK)


def app(environ, start_response):
    start_response("200 OK", [])
    return [DB["database"].encode()]
"""


def flask_app(tmp: Path, app_py: str) -> bytes:
    app = tmp / "app"
    shutil.copytree(EXAMPLES / "hello", app)
    (app / "app.py").write_text(app_py)
    (app / "requirements.txt").write_text("markupsafe\n")
    return tar_dir(app, RELEASE_PHASE)  # a release phase: the build imports the app


async def _source(spec: AppSpec) -> dict[str, str]:
    assert "web" in spec.processes  # the build's parsed configuration is what is asked for
    return dict(ENV)


async def test_module_level_bundle_config_imports_and_stays_out_of_the_image(
    ws: Workspace, tmp_path: Path
) -> None:
    lines: list[str] = []
    where = ws.builds / "cfg1" / "config"
    arch = flask_app(tmp_path, APP_PY.replace("{dir!r}", repr(str(where))))
    build = Build(ws, "cfg1", "hello", arch, lines.append, app_id=APP_ID, env_source=_source)
    out = await build.run()
    assert "       2 config vars; bundle_config: postgres" in lines
    assert not any(PASSWORD in ln or "from-config-vars" in ln for ln in lines)
    manifest = read_manifest(ws.store.path(out.image_digest))
    assert manifest is not None
    digests = [out.image_digest, *(layer.digest for layer in manifest.layers)]
    for digest in digests + ([out.static_digest] if out.static_digest else []):
        data = blob_bytes(ws.store.path(digest))
        assert PASSWORD.encode() not in data and b"from-config-vars" not in data, digest
    assert leftovers(ws) == []  # the build's directory, bundle_config with it, is gone


async def test_without_a_controller_bundle_config_has_core_only(
    ws: Workspace, tmp_path: Path
) -> None:
    app_py = (
        "from bundle_config import config\n"
        "assert 'postgres' not in config and config['core']['version'] == 0\n"
        "def app(environ, start_response):\n    return []\n"
    )
    lines: list[str] = []
    await Build(ws, "cfg2", "hello", flask_app(tmp_path, app_py), lines.append, app_id=APP_ID).run()
    assert "       0 config vars; bundle_config: no services" in lines


async def test_a_refused_configuration_fails_the_build(ws: Workspace, tmp_path: Path) -> None:
    async def refused(spec: AppSpec) -> dict[str, str]:
        raise BuildError("could not get the app's configuration: no servicehost")

    app_py = "def app(environ, start_response):\n    return []\n"
    build = Build(
        ws, "cfg3", "hello", flask_app(tmp_path, app_py), [].append, app_id=APP_ID,
        env_source=refused,
    )  # fmt: skip
    with pytest.raises(BuildError, match="no servicehost"):
        await build.run()
    assert leftovers(ws) == []


def test_config_vars_win_over_the_apps_env_and_summary_names_no_value(tmp_path: Path) -> None:
    config = bc.build_bundle_config(
        {"DATABASE_URL": "postgres://u:spec@h/db"}, ENV, Path("/data"), "hello"
    )
    assert config["postgres"]["password"] == PASSWORD and config["postgres"]["host"] == "10.9.8.7"
    assert config["core"]["data_directory"] == "/data"
    text = bc.summary(config, ENV)
    assert text == "2 config vars; bundle_config: postgres" and PASSWORD not in text


async def test_bundle_config_is_the_app_build_users_alone(ws: Workspace, tmp_path: Path) -> None:
    user = ws.app_build_user(APP_ID, "hello")
    assert user != ws.user  # not the shared user, which runs uv for every app
    config = bc.build_bundle_config({}, ENV, Path("/data"), "hello")
    path = bc.write_bundle_config(tmp_path / "config", config, user)
    for p, mode in ((path.parent, 0o700), (path, 0o600)):
        st = p.stat()
        assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (user.uid, mode)
    assert PASSWORD in path.read_text()
    with pytest.raises(FileExistsError):  # never written into a directory already there
        bc.write_bundle_config(tmp_path / "config", config, user)
