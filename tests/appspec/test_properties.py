"""Property tests: no input makes roost.appspec raise anything but AppSpecError,
and on ordinary files the reader agrees with Python's own configparser."""

from __future__ import annotations

import configparser

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from roost.appspec import AppSpec, AppSpecError, parse_epio, parse_procfile_spec
from roost.appspec.compose import compose
from roost.appspec.cron import parse_schedule
from roost.appspec.ini import parse_ini

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Each section with the keys it takes (and some it does not), and values
# fitting each key, so generated files reach deep into the mapping.
BOOL = ["true", "True", "false", "no", "1", "maybe", ""]
PATHS = [
    "static/",
    ".",
    "./",
    "../data",
    "../data/x/",
    "~/data",
    "%(data_directory)s/m",
    "%(django_admin_media)s/",
    "../shortcuts/django-admin-media",
    "/etc",
    "..",
    "a/../../b",
    "../pyenv/lib/python2.7/site-packages/x",
    "../pyenv/lib/python2.7/site-packages/django/contrib/admin/static/admin",
    "%(port)s",
    "robots.txt",
]
VOCABULARY: dict[str, dict[str, list[str]]] = {
    "wsgi": {"requirements": ["requirements.txt", "../r.txt", ""], "enabled": BOOL,
             "entrypoint": ["app:app", "app", "a:b:c", "app:site/main", "wsgi.py", "x()", "a.b:c.d",
                            "1:2", "app:", ":app", "a-b:c", "app:f(1)", "app:f("],
             "pythonpath": ["lib:src", "::", "../x", "/abs"],
             "python_version": ["2.7", "3.12", "x"],
             "async_type": ["eventlet", "gevent", "tornado"],
             "entry_point": ["wsgi.py"], "web": ["app"]},
    "static": {"/static": PATHS, "/": PATHS, "/media/": PATHS, "_directory_indexes": BOOL,
               "musicsaver/static": PATHS, "DJANGO_SETTINGS_MODULE": ["x"], "/robots.txt": PATHS},
    "services": {"postgres": BOOL, "redis": BOOL, "solr": BOOL, "memcached": BOOL},
    "env": {"DJANGO_SETTINGS_MODULE": ["settings", "a.b", "../x"], "EPIO": ["'q'", '"q"'],
            "PATH": ["/bin"], "a b": ["x"]},
    "django": {"base": PATHS, "append_settings": BOOL, "DJANGO_SETTINGS_MODULE": ["s"]},
    "checkout": {"directory_name": ["proj", "a/b", "..", " x "]},
    "symlinks": {"settings.py": PATHS, "a/b": PATHS, "base": ["."], "../x": PATHS, ".": PATHS},
    "http": {"gzip": BOOL, "expires-/static": ["3600", "-1", "x"], "expires-": ["1"],
             "expires-static": ["1"]},
    "redis": {"memory": ["16", "0", "-1", "x"]},
    "cron": {"manage.py sync": ["*/30 * * * *", "0-59/1 * * * *", "@daily", "61 * * * *", "* *"],
             "./x.sh": ["@weekly"]},
    "celery": {"djcelery": BOOL, "base": PATHS, "append_settings": BOOL},
    "basic_auth": {"_realm": ["X"], "user": ["pw", ""], "_other": ["x"]},
    "process-web": {"command": ["python server.py %(unix_sock)s", "python server.py"],
                    "cwd": PATHS},
    "process-worker": {"command": ["./w %(port)s", ""], "cwd": PATHS},
    "process-a b": {"command": ["x"]},
    "DEFAULT": {"base": ["src"], "port": ["1"]},
    "launcher": {"package": ["myapp"]},
    "WSGI": {"entrypoint": ["a:b"]},
}  # fmt: skip
# [wsgi] decides the most, so it comes up most often.
SECTION_CHOICES = ["wsgi"] * 6 + list(VOCABULARY)
ODD_VALUES = ["", '""', "%", "%%", "%(", "%(nope)s", "%(base)s", "a ; comment", "\u00e9", "\x00"]


def _mostly(draw: st.DrawFn, usual: st.SearchStrategy[str], odd: st.SearchStrategy[str]) -> str:
    """Draw from `usual` four times in five, else from `odd`."""
    return draw(usual if draw(st.integers(0, 4)) else odd)


@st.composite
def epio_documents(draw: st.DrawFn) -> str:
    """Plausible epio.ini files built from the vocabulary real files use."""
    lines: list[str] = []
    for _ in range(draw(st.integers(0, 6))):
        section = _mostly(draw, st.sampled_from(SECTION_CHOICES), st.text(min_size=1, max_size=8))
        lines.append(f"[{section}]")
        keys = VOCABULARY.get(section, {"x": ["y"]})
        for _ in range(draw(st.integers(0, 5))):
            key = _mostly(draw, st.sampled_from(list(keys)), st.text(min_size=1, max_size=8))
            delimiter = draw(st.sampled_from([" = ", "=", ": ", "  = "]))
            odd = st.sampled_from(ODD_VALUES) | st.text(max_size=12)
            value = _mostly(draw, st.sampled_from(keys.get(key, ["y"])), odd)
            lines.append(f"{key}{delimiter}{value}")
            if draw(st.booleans()):
                lines.append(draw(st.sampled_from(["", "# c", "#[env]", "  more", ";x", "rem x"])))
    return draw(st.sampled_from(["\n", "\r\n"])).join(lines)


def assert_only_appspec_errors(fn: object, data: object) -> AppSpec | None:
    try:
        spec = fn(data)  # type: ignore[operator]
    except AppSpecError as exc:
        assert exc.problems and all(str(p) for p in exc.problems)
        return None
    assert isinstance(spec, AppSpec)
    # Whatever parses must be encodable for the wire.
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(spec), type=AppSpec) == spec
    return spec


@FAST
@given(st.text(max_size=300))
def test_random_text_as_epio_ini(text: str) -> None:
    assert_only_appspec_errors(parse_epio, text)


@FAST
@given(st.binary(max_size=300))
def test_random_bytes_as_epio_ini_and_procfile(data: bytes) -> None:
    assert_only_appspec_errors(parse_epio, data)
    assert_only_appspec_errors(parse_procfile_spec, data)


@settings(FAST, max_examples=400)
@given(epio_documents())
def test_plausible_epio_ini(text: str) -> None:
    assert_only_appspec_errors(parse_epio, text)
    # compose() reports instead of raising, whatever the input.
    result = compose(text, "web: x\n")
    assert result.spec is not None or result.diag.errors


procfile_lines = st.one_of(
    st.text(max_size=30).map(lambda s: s.replace("\n", " ")),
    st.builds(
        "{}{}{}".format,
        st.sampled_from(["web", "worker", "release", "clock-2", "a_b"])
        | st.text("abc-_. :#", max_size=6),
        st.sampled_from([":", ": ", " : ", "", ":\t"]),
        st.sampled_from(["gunicorn app:app -b :$PORT", "", "python w.py", "x: y"])
        | st.text(max_size=10),
    ),
)


@FAST
@given(st.lists(procfile_lines, max_size=8))
def test_random_procfiles(lines: list[str]) -> None:
    spec = assert_only_appspec_errors(parse_procfile_spec, "\n".join(lines))
    if spec is not None:
        assert all(p.kind == "command" and p.command for p in spec.processes.values())


@FAST
@given(st.text(alphabet="0123456789*/-,abcdefjmnorstuvwy@ \t", max_size=30))
def test_random_cron_specs(text: str) -> None:
    try:
        schedule = parse_schedule(text)
    except AppSpecError:
        return
    assert len(schedule.text.split()) == 5
    assert schedule.minutes <= set(range(60)) and schedule.weekdays <= set(range(7))
    # The normalised form means the same thing.
    assert parse_schedule(schedule.text) == schedule


# ---------------------------------------------------------------- against configparser

# Ordinary files: no continuation lines, inline ';', '""', `rem` or odd whitespace,
# where Python 2's rules and Python 3's configparser agree.
_plain = st.characters(
    codec="utf-8", categories=("L", "N", "P", "S"), exclude_characters="[]=:;#\"'%\\"
)
names = st.text(_plain, min_size=1, max_size=10).filter(
    lambda s: s != "DEFAULT" and not s.lower().startswith("rem")
)
# Values padded with blanks on either side: both readers strip them.
plain_values = st.builds(
    lambda left, text, right: left + text + right,
    st.sampled_from(["", " ", "  "]),
    st.text(st.one_of(_plain, st.just(" ")), max_size=15),
    st.sampled_from(["", " ", "\t"]),
)


@FAST
@given(
    st.lists(
        st.tuples(
            names,
            st.lists(
                st.tuples(names, st.sampled_from(["=", ":", " = ", " : "]), plain_values),
                max_size=4,
            ),
        ),
        max_size=5,
    ),
    st.sampled_from(["\n", "\r\n"]),
)
def test_agrees_with_configparser_on_ordinary_files(
    sections: list[tuple[str, list[tuple[str, str, str]]]], newline: str
) -> None:
    lines: list[str] = ["# generated"]
    for section, options in sections:
        lines.append(f"[{section}]")
        lines.extend(f"{key}{delimiter}{value}" for key, delimiter, value in options)
    text = newline.join(lines) + newline
    reference = configparser.RawConfigParser(strict=False, interpolation=None)
    reference.optionxform = str  # type: ignore[assignment,method-assign]
    reference.read_string(text)
    ours = parse_ini(text)
    assert list(ours.sections) == reference.sections()
    for name, section in ours.sections.items():
        assert {k: o.value for k, o in section.options.items()} == dict(reference.items(name))
