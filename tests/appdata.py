"""Where an app's data directory is under a platform's DATA, for tests that
read what the app wrote there."""

from __future__ import annotations

from pathlib import Path

from roost.datadir.shared import app_tree, root_for
from roost.runner.layout import Layout


def app_data_dir(data: Path, app: str) -> Path:
    """The app's live tree (roost.datadir) when the platform keeps one under
    `data`, else the runner's pulled copy there."""
    live = app_tree(root_for(data), app)
    return live if live.exists() else Layout(data).data_directory(app)
