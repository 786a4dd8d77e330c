"""Compiled modules end to end: a real package built from its sdist, served by
instances whose sandbox has no compiler.

netifaces 0.11.0 is a C extension and nothing else (the module *is* the
shared object), and PyPI has no wheel of it for CPython 3.8 or later: uv must
build it from its sdist, in the build sandbox, with the builder's build stack.
The build checks the module's libraries against the runner stack; the app
imports it and serves what it computes, from a runner sandbox in which gcc is
not reachable although this host has it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO, wait_until
from tests.e2e.platform import Platform, running_platform

pytestmark = pytest.mark.e2e

ROUTE = """

@app.route("/compiled")
def compiled() -> dict[str, object]:
    import shutil
    import subprocess

    import netifaces

    try:
        subprocess.run(["gcc", "--version"], capture_output=True)
        gcc = "ran"
    except OSError as exc:
        gcc = type(exc).__name__
    return {
        "module": netifaces.__file__,
        "interfaces": netifaces.interfaces(),
        "which_gcc": shutil.which("gcc"),
        "which_cc": shutil.which("cc"),
        "gcc": gcc,
    }
"""


def test_an_sdist_c_extension_builds_and_serves_on_a_runner_without_a_compiler(
    tmp_path: Path,
) -> None:
    assert shutil.which("gcc"), "this host has the build stack (scripts/install)"
    app = tmp_path / "cext"
    shutil.copytree(REPO / "examples" / "hello", app)
    (app / "requirements.txt").write_text("flask>=3.0\nnetifaces==0.11.0\n")
    with (app / "app.py").open("a") as f:
        f.write(ROUTE)
    with running_platform() as platform:
        deploy_and_ask(platform, app)


def deploy_and_ask(platform: Platform, app: Path) -> None:
    platform.roost("apps", "create", "cext")
    r = platform.roost("deploy", str(app), "--app", "cext")
    assert "is live" in r.stdout
    # Built from source (no wheel), then checked against the runner stack.
    assert "a package has no wheel: building it" in r.stdout, r.stdout
    assert "shared objects load on the runner stack" in r.stdout, r.stdout
    assert "warning: this builder's build stack lacks" not in r.stdout

    resp = wait_until(
        lambda: (x := platform.get("cext", "/compiled")).status_code == 200 and x, 60, "/compiled"
    )
    got = json.loads(resp.text)
    assert Path(got["module"]).name.startswith("netifaces.cpython-")
    assert got["module"].endswith(".so") and "/venv/" in got["module"]
    assert "lo" in got["interfaces"]
    # The instance's sandbox: no compiler by any name, and running one fails.
    assert got["which_gcc"] is None and got["which_cc"] is None
    assert got["gcc"] == "PermissionError"
