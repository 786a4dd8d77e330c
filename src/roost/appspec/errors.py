"""The one error type `roost.appspec` raises for bad configuration."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One reason a configuration cannot be deployed.

    `file` is the config file's name as the user knows it ("epio.ini"), `line`
    is 1-based (0 when the problem is not about one line), and `hint` says what
    to do about it when we can tell.
    """

    message: str
    file: str = ""
    line: int = 0
    hint: str = ""

    def __str__(self) -> str:
        where = self.file
        if where and self.line:
            where = f"{where}:{self.line}"
        text = f"{where}: {self.message}" if where else self.message
        return f"{text} ({self.hint})" if self.hint else text


class AppSpecError(Exception):
    """Configuration that cannot be deployed; `problems` says every reason."""

    def __init__(self, problems: list[Problem] | Problem | str) -> None:
        if isinstance(problems, str):
            problems = [Problem(problems)]
        elif isinstance(problems, Problem):
            problems = [problems]
        self.problems: list[Problem] = list(problems)
        super().__init__("; ".join(str(p) for p in self.problems))
