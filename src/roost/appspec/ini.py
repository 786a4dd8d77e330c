"""Read epio.ini exactly as ep.io did: Python 2.7's ConfigParser, with line numbers.

Theory of operation
-------------------
ep.io parsed epio.ini with Python 2's ConfigParser and real files depend on its
quirks. Python 3's configparser differs (strict duplicate checks, no `rem`
comments, different inline-comment and empty-line rules) and throws away the
line numbers we need for error messages, so `parse_ini` re-implements the
Python 2.7 `RawConfigParser._read` loop rule for rule:

* A blank line, or a line whose first character is `#` or `;`, is a comment.
  So is a line starting in column 0 whose first word is `rem` (any case).
* A line starting with whitespace continues the previous option (if one is
  open): its stripped text is appended after a newline. Blank lines are
  comments, so they do not end a value; an indented `# ...` line does not
  start a comment, it continues the value.
* `[name]` in column 0 starts a section (anything after `]` is ignored). A
  name seen before re-opens that section: duplicates merge and a later value
  for a key replaces the earlier one (keeping the key's first position, as
  py2.7's OrderedDict did). `[DEFAULT]` holds defaults for interpolation.
* `key = value` or `key: value`: the key runs to the first `=` or `:` and is
  right-stripped; case is kept (ep.io used `optionxform = str`). The value is
  stripped; if its first `;` follows whitespace, that `;` starts a comment;
  a value of exactly `""` means empty.
* Any other line is an error. All of them are reported together (py2's
  ParsingError), except a key before the first header, which stops at once
  (MissingSectionHeaderError).

Interpolation (`interpolate`) follows py2 `ConfigParser.get`: a value without
`%(` is returned as written (so `%d` and `%%` survive); otherwise `%%` is `%`
and `%(name)s` is the section's option, a [DEFAULT] option, or one of ep.io's
variables. Those variables are per-instance or per-host, so they are left in
place, unresolved, for `roost.appspec.runtime` to fill.

Deliberate deviations, each safer than py2: a UTF-8 BOM is skipped, lone CR
line ends count as line ends, and bytes that are not UTF-8 are tolerated in
comment lines (py2 read bytes, so such files worked on ep.io).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from roost.appspec.errors import AppSpecError, Problem

# ep.io's interpolation variables. All are left unresolved in the spec.
VARIABLES = ("data_directory", "django_admin_media", "app_id", "port", "unix_sock")
DEFAULTSECT = "DEFAULT"
# py2 ConfigParser.MAX_INTERPOLATION_DEPTH
MAX_DEPTH = 10

# Python 2 ran these regexes over byte strings, so `\s` meant ASCII whitespace.
_SECTCRE = re.compile(r"\[(?P<header>[^]]+)\]", re.ASCII)
_OPTCRE = re.compile(r"(?P<option>[^:=\s][^:=]*)\s*(?P<vi>[:=])\s*(?P<value>.*)$", re.ASCII)
_ASCII_SPACE = " \t\n\r\x0b\x0c"
_FIRST_WORD = re.compile(r"[^ \t\n\r\x0b\x0c]*")
# A commented-out section header such as `#[redis]` or `# [env]`.
_COMMENTED_HEADER = re.compile(r"^[#;][#;\s]*\[(?P<header>[^]]+)\]")


@dataclass
class IniOption:
    name: str
    value: str  # raw, uninterpolated; continuation lines joined with "\n"
    line: int  # the line holding the key
    delimiter: str  # "=" or ":"
    last_line: int = 0  # last continuation line (== line when there is none)


@dataclass
class IniSection:
    name: str
    header_lines: list[int] = field(default_factory=list)
    options: dict[str, IniOption] = field(default_factory=dict)
    # (earlier, later) pairs where a later line set a key again.
    replaced: list[tuple[IniOption, IniOption]] = field(default_factory=list)

    @property
    def line(self) -> int:
        return self.header_lines[0] if self.header_lines else 0


@dataclass
class IniDocument:
    filename: str
    sections: dict[str, IniSection] = field(default_factory=dict)
    defaults: IniSection = field(default_factory=lambda: IniSection(DEFAULTSECT))
    # Every comment line: (line number, text). Used to explain misplaced keys.
    comments: list[tuple[int, str]] = field(default_factory=list)

    def commented_headers(self, after: int, before: int) -> list[tuple[int, str]]:
        """Commented-out section headers strictly between two lines."""
        found = []
        for lineno, text in self.comments:
            if after < lineno < before:
                m = _COMMENTED_HEADER.match(text)
                if m:
                    found.append((lineno, m.group("header")))
        return found

    def header_before(self, section: str, line: int) -> int:
        """The line of the header (of `section`) that `line` falls under."""
        sect = self.sections.get(section)
        if sect is None:
            return 0
        return max((h for h in sect.header_lines if h < line), default=0)


def decode(data: bytes | str, filename: str) -> list[str]:
    """Split a config file into lines of text (without line ends).

    UTF-8, with or without a BOM; LF, CRLF or CR line ends. A line that is
    not UTF-8 is an error unless it is a comment line (see module doc).
    """
    if isinstance(data, str):
        text = data[1:] if data.startswith("\ufeff") else data
        return text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise AppSpecError(
            Problem("the file is UTF-16; save it as UTF-8", filename, 1, hint="ep.io read UTF-8")
        )
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    raw_lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    lines: list[str] = []
    problems: list[Problem] = []
    for lineno, raw in enumerate(raw_lines, 1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            if raw[:1] in (b"#", b";"):
                lines.append(raw.decode("utf-8", errors="replace"))
                continue
            problems.append(
                Problem(
                    f"byte 0x{raw[exc.start]:02x} at column {exc.start + 1} is not UTF-8",
                    filename,
                    lineno,
                    hint="save the file as UTF-8",
                )
            )
            lines.append("")
    if problems:
        raise AppSpecError(problems)
    return lines


def _is_comment(line: str) -> bool:
    if line.strip(_ASCII_SPACE) == "" or line[0] in "#;":
        return True
    # py2: `line.split(None, 1)[0].lower() == 'rem' and line[0] in "rR"`
    word = _FIRST_WORD.match(line)
    return line[0] in "rR" and word is not None and word.group().lower() == "rem"


def _clean_value(value: str) -> str:
    # py2 looked only at the FIRST ';': it starts a comment if whitespace
    # precedes it. At position 0 py2 checked value[-1] (a negative index), so
    # `key = ;x ` (trailing space) became empty; kept for fidelity.
    pos = value.find(";")
    if pos != -1 and value[pos - 1] in _ASCII_SPACE:
        value = value[:pos]
    value = value.strip(_ASCII_SPACE)
    return "" if value == '""' else value


def parse_ini(data: bytes | str, filename: str = "epio.ini") -> IniDocument:
    """Parse like Python 2.7 ConfigParser; raise AppSpecError naming every bad line."""
    doc = IniDocument(filename)
    current: IniSection | None = None
    option: IniOption | None = None
    # (line, text) of every line that is neither a comment, a header nor an option.
    bad: list[tuple[int, str]] = []
    for lineno, line in enumerate(decode(data, filename), 1):
        if _is_comment(line):
            if line.strip(_ASCII_SPACE):
                doc.comments.append((lineno, line))
            continue
        if line[0] in _ASCII_SPACE and current is not None and option is not None:
            extra = line.strip(_ASCII_SPACE)
            if extra:
                option.value += "\n" + extra
                option.last_line = lineno
            continue
        header = _SECTCRE.match(line)
        if header:
            name = header.group("header")
            if name == DEFAULTSECT:
                current = doc.defaults
            else:
                current = doc.sections.setdefault(name, IniSection(name))
            current.header_lines.append(lineno)
            option = None
            continue
        if current is None:
            raise AppSpecError(
                Problem(
                    f"{line.strip()!r} comes before the first [section] header",
                    filename,
                    lineno,
                    hint="every key must be under a header such as [wsgi]",
                )
            )
        m = _OPTCRE.match(line)
        if not m:
            bad.append((lineno, line))
            continue
        name = m.group("option").rstrip(_ASCII_SPACE)
        option = IniOption(name, _clean_value(m.group("value")), lineno, m.group("vi"), lineno)
        previous = current.options.get(name)
        if previous is not None:
            current.replaced.append((previous, option))
        current.options[name] = option
    if bad:
        raise AppSpecError([_bad_line(filename, lineno, text) for lineno, text in bad])
    return doc


def _bad_line(filename: str, lineno: int, text: str) -> Problem:
    stripped = text.strip()
    if stripped.startswith(("<<<<<<<", "=======", ">>>>>>>")):
        return Problem(
            f"{stripped[:40]!r} is merge-conflict residue",
            filename,
            lineno,
            hint="resolve the merge conflict and remove the marker lines",
        )
    indented = text[:1] != "" and text[0] in _ASCII_SPACE
    if indented and stripped.startswith("["):
        return Problem(
            f"{stripped!r}: a section header must start in the first column",
            filename,
            lineno,
        )
    if indented:
        return Problem(
            f"{stripped!r}: an indented line can only continue a value",
            filename,
            lineno,
            hint="remove the indentation",
        )
    return Problem(
        f"{stripped[:60]!r} is neither a [section] header, a 'key = value' line nor a comment",
        filename,
        lineno,
    )


class _Interpolation:
    """py2 ConfigParser.get's `%(name)s` expansion for one section."""

    def __init__(self, doc: IniDocument, section: IniSection) -> None:
        self.doc = doc
        self.section = section

    def lookup(self, name: str) -> IniOption | None:
        return self.section.options.get(name) or self.doc.defaults.options.get(name)

    def expand(self, option: IniOption, depth: int = 0) -> str:
        value = option.value
        if "%(" not in value:
            return value
        out: list[str] = []
        pos = 0
        while True:
            pct = value.find("%", pos)
            if pct == -1:
                out.append(value[pos:])
                return "".join(out)
            out.append(value[pos:pct])
            nxt = value[pct + 1 : pct + 2]
            if nxt == "%":
                out.append("%")
                pos = pct + 2
                continue
            close = value.find(")", pct + 2) if nxt == "(" else -1
            if close == -1:
                raise self._error(
                    option, "'%' must be followed by '%' or '(name)s'", "write %% for %"
                )
            name = value[pct + 2 : close]
            if value[close + 1 : close + 2] != "s":
                raise self._error(option, f"'%({name})' must be followed by 's'", "")
            out.append(self._resolve(option, name, depth))
            pos = close + 2

    def _resolve(self, option: IniOption, name: str, depth: int) -> str:
        ref = self.lookup(name)
        if ref is not None:
            if depth >= MAX_DEPTH:
                raise self._error(option, f"%({name})s refers to itself (too deep)", "")
            return self.expand(ref, depth + 1)
        if name in VARIABLES:
            return f"%({name})s"
        known = ", ".join(f"%({v})s" for v in VARIABLES)
        raise self._error(option, f"unknown variable %({name})s", f"known variables: {known}")

    def _error(self, option: IniOption, message: str, hint: str) -> AppSpecError:
        return AppSpecError(Problem(message, self.doc.filename, option.line, hint=hint))


def interpolate(doc: IniDocument, section: IniSection, option: IniOption) -> str:
    """The option's value as ConfigParser.get would return it (runtime variables left in)."""
    return _Interpolation(doc, section).expand(option)
