"""What an instance said before it exited, for the reason a deploy shows. Pure.

The reason is the last lines of its output (stderr, else stdout). A web
server that cannot load the app says the app's own exception first and then
a great deal of its own: gunicorn prints each worker's traceback, then its
master's (HaltServer: "Worker failed to boot."), and with two workers the
app's line falls out of any short tail. So the tail also keeps the exception
that ended the first Python traceback of the run, and adds it at the end
when it is no longer among the lines kept.
"""

from __future__ import annotations

import re
from collections import deque

# The last line of a traceback: a qualified exception name, then its message.
_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)(?::.*)?$")
TRACEBACK = "Traceback (most recent call last):"
FIRST = "first error in its output: "


class Tail:
    def __init__(self, size: int) -> None:
        self._lines: deque[str] = deque(maxlen=size)
        self._in_traceback = False
        self.first_exception = ""

    def add(self, line: str) -> None:
        self._lines.append(line)
        if self.first_exception:
            return
        text = line.strip()
        if text.endswith(TRACEBACK):  # a logger may prefix it
            self._in_traceback = True
        elif self._in_traceback and not line.startswith((" ", "\t")):
            if _EXCEPTION.match(text):
                self.first_exception = text
            self._in_traceback = False

    def __bool__(self) -> bool:
        return bool(self._lines)

    def lines(self) -> list[str]:
        kept = list(self._lines)
        if self.first_exception and self.first_exception not in kept:
            kept.append(FIRST + self.first_exception)
        return kept
