"""The controller builds its API without importing pydantic.v1 (issue 21):
FastAPI imports it only to refuse v1 models, which the API has none of."""

from __future__ import annotations

import subprocess
import sys


def test_the_controller_imports_no_pydantic_v1() -> None:
    code = (
        "import sys, roost.controller.daemon\n"
        "assert sys.modules.get('pydantic.v1') is None, 'pydantic.v1 imported'\n"
        "assert not [m for m in sys.modules if m.startswith('pydantic.v1.')]\n"
        "from roost.controller.api.app import create_api\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
