"""The one exception a build step raises for a reason the user should read."""

from __future__ import annotations


class BuildError(Exception):
    """The build cannot go on; the message is shown to the user as is."""


class OutputLimitExceeded(BuildError):
    """Build output passed settings.build_output_limit."""
