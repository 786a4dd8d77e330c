"""What a runner's sandbox binds of an image: its layers, and the interpreter it carries
mounted at the path it was installed at (roost.runner.confine)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from roost.runner.confine import image_binds, interpreter_mount

PREFIX = "/opt/pythons/cpython-3.12.1"


def image(tmp_path: Path, python: object, *, layer: bool = True) -> Path:
    """An image root as the cache composes it: shared layers linked from the root."""
    layers = tmp_path / "layers"
    for name in ("venvlayer", "pylayer"):
        (layers / name).mkdir(parents=True, exist_ok=True)
    root = tmp_path / "images" / "abc"
    (root / "app").mkdir(parents=True)
    os.symlink("../../layers/venvlayer", root / "venv")
    (layers / "venvlayer" / "pyvenv.cfg").write_text(f"home = {PREFIX}/bin\n")
    if layer:
        os.symlink("../../layers/pylayer", root / "python")
    (root / "roost-image.json").write_text(json.dumps({"python": python}))
    return root


def test_the_carried_interpreter_is_mounted_where_it_was_installed(tmp_path: Path) -> None:
    root = image(tmp_path, {"prefix": PREFIX, "layer": "python", "carried": True})
    mount = interpreter_mount(root)
    assert mount == ((tmp_path / "layers" / "pylayer").resolve(), Path(PREFIX))
    # The host's installation at that path is not bound: the tenant sees the image's only.
    assert Path(PREFIX) not in image_binds(root)


@pytest.mark.parametrize(
    "python",
    [
        {"prefix": PREFIX, "layer": None, "carried": False},  # the host's (in /usr, say)
        {"prefix": "/usr/local", "layer": "python"},  # over the system directories: never
        {"prefix": "/", "layer": "python"},
        {"prefix": "opt/python", "layer": "python"},
        {"prefix": "/opt/../etc", "layer": "python"},
        {"prefix": PREFIX, "layer": "../../layers/pylayer"},
        {"prefix": PREFIX, "layer": "app"},  # a real directory of the image, not a layer
        "not an object",
    ],
)
def test_what_is_not_a_carried_interpreter_is_not_mounted(tmp_path: Path, python: object) -> None:
    root = image(tmp_path, python)
    assert interpreter_mount(root) is None
    # Older images and host interpreters: the installation the venv names, bound as it is.
    assert Path(PREFIX) in image_binds(root)


def test_an_image_without_its_layer_mounts_nothing(tmp_path: Path) -> None:
    root = image(tmp_path, {"prefix": PREFIX, "layer": "python"}, layer=False)
    assert interpreter_mount(root) is None
