"""A real build whose C extension, compiled from source in the build sandbox,
links a library the runner stack lacks: the build fails naming both."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from roost.builder.errors import BuildError
from roost.builder.pipeline import Build
from roost.builder.workspace import Workspace

from .conftest import EXAMPLES, tar_dir

SETUP_PY = """\
import os
from setuptools import Extension, setup

here = os.path.dirname(os.path.abspath(__file__))
setup(
    name="cext",
    version="1.0",
    ext_modules=[
        Extension(
            "cext",
            ["cext.c"],
            libraries=["absent"],
            library_dirs=[os.path.join(here, "native")],
        )
    ],
)
"""

CEXT_C = """\
#include <Python.h>
int absent(void);
static PyObject *seven(PyObject *self, PyObject *args) { return PyLong_FromLong(absent()); }
static PyMethodDef methods[] = {{"seven", seven, METH_NOARGS, ""}, {0}};
static struct PyModuleDef mod = {PyModuleDef_HEAD_INIT, "cext", "", -1, methods};
PyMODINIT_FUNC PyInit_cext(void) { return PyModule_Create(&mod); }
"""


async def test_a_module_built_from_source_against_a_library_runners_lack_fails_the_build(
    ws: Workspace, tmp_path: Path
) -> None:
    app = tmp_path / "app"
    shutil.copytree(EXAMPLES / "hello", app)
    pkg = app / "cext"
    (pkg / "native").mkdir(parents=True)
    (pkg / "setup.py").write_text(SETUP_PY)
    (pkg / "cext.c").write_text(CEXT_C)
    (pkg / "absent.c").write_text("int absent(void) { return 7; }\n")
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-Wl,-soname,libabsent.so.1", "-o",
         str(pkg / "native" / "libabsent.so"), str(pkg / "absent.c")],
        check=True,
    )  # fmt: skip
    (app / "requirements.txt").write_text("flask>=3.0\n./cext\n")
    lines: list[str] = []
    try:
        await Build(ws, "cext1", "hello", tar_dir(app), lines.append, app_id=12).run()
    except BuildError as exc:
        error = str(exc)
    else:
        raise AssertionError("the build passed:\n" + "\n".join(lines))
    # uv compiled it (the build stack is there), then the check refused it.
    assert any(ln.startswith("-----> install (") for ln in lines), lines
    assert "-----> extensions failed" in "\n".join(lines)
    assert error.startswith("venv/lib/python3.11/site-packages/cext.cpython-311-"), error
    assert ".so needs libabsent.so.1, which the runner stack does not have" in error
