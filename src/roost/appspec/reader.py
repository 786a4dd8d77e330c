"""Collecting problems while mapping a config, and typed access to ini options.

Mapping never stops at the first problem: every error and warning in a file
is collected (`Diagnostics`) so `roost check` can show them all at once.
"""

from __future__ import annotations

from roost.appspec.errors import AppSpecError, Problem
from roost.appspec.hints import key_hint
from roost.appspec.ini import IniDocument, IniOption, IniSection, interpolate
from roost.appspec.model import ConfigWarning
from roost.appspec.values import parse_bool, parse_int


def split_source(source: str) -> tuple[str, int]:
    """ "epio.ini:12" -> ("epio.ini", 12); a source without a line -> (source, 0)."""
    file, sep, tail = source.rpartition(":")
    if sep and tail.isdigit():
        return file, int(tail)
    return source, 0


class Diagnostics:
    def __init__(self) -> None:
        self.errors: list[Problem] = []
        self.warnings: list[ConfigWarning] = []

    def error(self, message: str, file: str = "", line: int = 0, hint: str = "") -> None:
        self.errors.append(Problem(message, file, line, hint))

    def warn(self, message: str, file: str = "", line: int = 0, hint: str = "") -> None:
        self.warnings.append(ConfigWarning(message=message, file=file, line=line, hint=hint))

    def extend(self, other: Diagnostics) -> None:
        self.errors.extend(other.errors)
        self.warnings.extend(other.warnings)

    def raise_if_errors(self) -> None:
        if self.errors:
            raise AppSpecError(self.errors)


class Reader:
    """Typed, interpolated access to one epio.ini; problems go to `diag`."""

    def __init__(self, doc: IniDocument, diag: Diagnostics) -> None:
        self.doc = doc
        self.diag = diag
        self.file = doc.filename
        # Unused sections and keys, kept verbatim for AppSpec.unknown.
        self.unknown: dict[str, dict[str, str]] = {}

    def error(self, message: str, line: int, hint: str = "") -> None:
        self.diag.error(message, self.file, line, hint)

    def warn(self, message: str, line: int, hint: str = "") -> None:
        self.diag.warn(message, self.file, line, hint)

    def section(self, name: str) -> IniSection | None:
        return self.doc.sections.get(name)

    def text(self, sect: IniSection, opt: IniOption, multiline: bool = False) -> str | None:
        """The interpolated value; None (and an error) if it cannot be used."""
        try:
            value = interpolate(self.doc, sect, opt)
        except AppSpecError as exc:
            self.diag.errors.extend(exc.problems)
            return None
        if "\n" in value and not multiline:
            self.error(
                f"{opt.name!r}: the value continues onto line {opt.last_line}",
                opt.line,
                "an indented line continues the value above it; remove the indentation",
            )
            return None
        return value

    def check_runtime_text(self, value: str, line: int) -> None:
        """Warn about a variable the runtime cannot fill (only [static] maps it)."""
        if "%(django_admin_media)s" in value:
            self.warn(
                "%(django_admin_media)s is only understood in [static]; here it stays as written",
                line,
            )

    def get(self, sect: IniSection | None, key: str) -> tuple[str, int] | None:
        """(value, line) of a key if present and usable."""
        if sect is None or key not in sect.options:
            return None
        opt = sect.options[key]
        value = self.text(sect, opt)
        return None if value is None else (value, opt.line)

    def boolean(self, sect: IniSection | None, key: str, default: bool) -> bool:
        got = self.get(sect, key)
        if got is None:
            return default
        value, line = got
        parsed = parse_bool(value)
        if parsed is None:
            self.error(f"{key} = {value!r} is not a boolean", line, "write true or false")
            return default
        return parsed

    def integer(self, sect: IniSection | None, key: str) -> tuple[int, int] | None:
        got = self.get(sect, key)
        if got is None:
            return None
        value, line = got
        parsed = parse_int(value)
        if parsed is None:
            self.error(f"{key} = {value!r} is not a whole number", line)
            return None
        return parsed, line

    def unknown_key(
        self, sect: IniSection, opt: IniOption, known: tuple[str, ...], what: str = ""
    ) -> None:
        """Warn about a key Roost does not use, keep it, and say what was meant."""
        self.unknown.setdefault(sect.name, {})[opt.name] = opt.value
        message = what or f"[{sect.name}] has no key {opt.name!r}; ignored"
        self.warn(message, opt.line, key_hint(self.doc, sect.name, opt, known))

    def check_keys(self, sect: IniSection | None, known: tuple[str, ...]) -> None:
        if sect is None:
            return
        for opt in sect.options.values():
            if opt.name not in known:
                self.unknown_key(sect, opt, known)
