"""The reader behaves like Python 2.7's ConfigParser, quirk by quirk (KEYS.md)."""

from __future__ import annotations

import pytest

from roost.appspec.errors import AppSpecError
from roost.appspec.ini import IniDocument, interpolate, parse_ini


def values(doc: IniDocument, section: str) -> dict[str, str]:
    return {k: o.value for k, o in doc.sections[section].options.items()}


def get(text: str, section: str, key: str) -> str:
    doc = parse_ini(text)
    sect = doc.sections[section]
    return interpolate(doc, sect, sect.options[key])


def errors(text: str | bytes) -> list[tuple[int, str]]:
    with pytest.raises(AppSpecError) as info:
        parse_ini(text)
    return [(p.line, p.message) for p in info.value.problems]


def test_both_delimiters_and_spacing() -> None:
    doc = parse_ini("[wsgi]\nenabled=false\nentrypoint: app:app\nrequirements   =   r.txt   \n")
    assert values(doc, "wsgi") == {
        "enabled": "false",
        "entrypoint": "app:app",
        "requirements": "r.txt",
    }
    assert [o.delimiter for o in doc.sections["wsgi"].options.values()] == ["=", ":", "="]


def test_key_runs_to_first_delimiter() -> None:
    # `web:app` is key "web", value "app"; `expires-/static/s=86400` keeps its slashes.
    doc = parse_ini("[wsgi]\nweb:app\n[http]\nexpires-/static/s=86400\na = b = c\n")
    assert values(doc, "wsgi") == {"web": "app"}
    assert values(doc, "http") == {"expires-/static/s": "86400", "a": "b = c"}


def test_keys_keep_case_and_are_right_stripped() -> None:
    doc = parse_ini("[env]\nDJANGO_SETTINGS_MODULE = s\n[cron]\nmanage.py x  = 0 0 * * *\n")
    assert values(doc, "env") == {"DJANGO_SETTINGS_MODULE": "s"}
    assert values(doc, "cron") == {"manage.py x": "0 0 * * *"}


def test_section_names_are_case_sensitive() -> None:
    doc = parse_ini("[wsgi]\na = 1\n[WSGI]\na = 2\n")
    assert values(doc, "wsgi") == {"a": "1"} and values(doc, "WSGI") == {"a": "2"}


def test_comments() -> None:
    doc = parse_ini(
        "# top\n; semi\n[wsgi]\n#[redis]\n# # memory = 16\nrem a comment\nREM = too\na = 1\n"
    )
    assert values(doc, "wsgi") == {"a": "1"}
    assert (4, "#[redis]") in doc.comments
    assert doc.commented_headers(3, 8) == [(4, "redis")]


def test_inline_comments_like_py2() -> None:
    # Only the FIRST ';' counts, and only after whitespace; '#' is never inline.
    assert get("[a]\nk = v ; note\n", "a", "k") == "v"
    assert get("[a]\nk = v;x ; y\n", "a", "k") == "v;x ; y"
    assert get("[a]\nk = v # not a comment\n", "a", "k") == "v # not a comment"
    # py2 checked value[-1] when ';' was the first character.
    assert get("[a]\nk = ;x \n", "a", "k") == ""
    assert get("[a]\nk = ;x\n", "a", "k") == ";x"


def test_double_quotes_alone_mean_empty_other_quotes_are_kept() -> None:
    assert get('[a]\nk = ""\n', "a", "k") == ""
    assert get("[a]\nk = 'PRODUCAO'\n", "a", "k") == "'PRODUCAO'"
    assert get('[a]\nk="production.cfg"\n', "a", "k") == '"production.cfg"'


def test_duplicate_sections_merge_and_last_key_wins_in_first_position() -> None:
    doc = parse_ini("[static]\n/static = static\n/a = a\n[env]\nX = 1\n[static]\n/static = files\n")
    assert list(values(doc, "static").items()) == [("/static", "files"), ("/a", "a")]
    sect = doc.sections["static"]
    assert sect.header_lines == [1, 6]
    assert [(old.line, new.line) for old, new in sect.replaced] == [(2, 7)]


def test_empty_sections_and_blank_lines() -> None:
    doc = parse_ini("\n\n[symlinks]\n\n[checkout]\n[cron]")
    assert set(doc.sections) == {"symlinks", "checkout", "cron"}
    assert all(not s.options for s in doc.sections.values())


def test_continuation_lines_and_blank_lines_inside_values() -> None:
    doc = parse_ini("[env]\nA = one\n  two\n\n\tthree\nB = x\n")
    assert values(doc, "env") == {"A": "one\ntwo\nthree", "B": "x"}
    a = doc.sections["env"].options["A"]
    assert (a.line, a.last_line) == (2, 5)


def test_indented_comment_continues_a_value() -> None:
    # py2 only recognised comments in column 0.
    doc = parse_ini("[static]\n/static = static\n    # not a comment\n")
    assert values(doc, "static") == {"/static": "static\n# not a comment"}


def test_header_trailing_text_is_ignored() -> None:
    doc = parse_ini("[wsgi] # the app\na = 1\n")
    assert values(doc, "wsgi") == {"a": "1"}


def test_bom_crlf_cr_and_no_final_newline() -> None:
    for data in (
        b"\xef\xbb\xbf[wsgi]\r\nentrypoint = app:app\r\n",
        b"[wsgi]\rentrypoint = app:app",
        "\ufeff[wsgi]\nentrypoint = app:app",
    ):
        assert values(parse_ini(data), "wsgi") == {"entrypoint": "app:app"}


def test_utf8_values_and_bad_bytes_only_in_comments() -> None:
    doc = parse_ini("# Content media doesn\u2019t change\n[env]\nNAME = caf\u00e9\n".encode())
    assert values(doc, "env") == {"NAME": "caf\u00e9"}
    # py2 read bytes, so a Latin-1 comment worked on ep.io; it still does.
    assert values(parse_ini(b"# caf\xe9\n[env]\nA = 1\n"), "env") == {"A": "1"}
    assert errors(b"[env]\nA = caf\xe9\n") == [(2, "byte 0xe9 at column 8 is not UTF-8")]
    assert errors(b"\xff\xfe[\x00") == [(1, "the file is UTF-16; save it as UTF-8")]


def test_option_before_any_section() -> None:
    [(line, message)] = errors("# hello\n\nentrypoint = app:app\n[wsgi]\n")
    assert line == 3 and "before the first [section]" in message


def test_every_bad_line_is_reported() -> None:
    text = "[wsgi]\nrequirements = r.txt\n=======\n>>>>>>> theirs\njust words\n  [indented]\n"
    problems = errors(text)
    assert [line for line, _ in problems] == [3, 4, 5]
    assert "merge-conflict" in problems[0][1] and "merge-conflict" in problems[1][1]
    assert "neither" in problems[2][1]
    # An indented header with no open option is not a continuation: it is an error.
    assert errors("[a]\n  [b]\n")[0][0] == 2


def test_empty_key_is_an_error() -> None:
    assert errors("[a]\n= value\n")[0][0] == 2
    assert errors("[a]\n: value\n")[0][0] == 2


def test_default_section_feeds_interpolation() -> None:
    doc = parse_ini("[DEFAULT]\nroot = srv\n[static]\n/s = %(root)s/static\n")
    assert "DEFAULT" not in doc.sections
    assert get("[DEFAULT]\nroot = srv\n[static]\n/s = %(root)s/static\n", "static", "/s") == (
        "srv/static"
    )


# ---------------------------------------------------------------- interpolation


@pytest.mark.parametrize(
    "name", ["data_directory", "django_admin_media", "app_id", "port", "unix_sock"]
)
def test_ep_io_variables_stay_unresolved(name: str) -> None:
    assert get(f"[a]\nk = x %({name})s y\n", "a", "k") == f"x %({name})s y"


def test_values_without_a_reference_are_taken_literally() -> None:
    # py2 ConfigParser only formatted values containing "%(".
    assert get("[cron]\ndate +%d/%m = 0 0 * * *\nk = 100%\n", "cron", "k") == "100%"
    assert get("[a]\nk = 50%% off\n", "a", "k") == "50%% off"


def test_percent_escapes_once_a_reference_is_present() -> None:
    assert get("[a]\nk = %(port)s 100%%\n", "a", "k") == "%(port)s 100%"


def test_references_to_other_keys_in_the_section() -> None:
    text = "[django]\nbase = src\nsettings = %(base)s/settings.py\n"
    assert get(text, "django", "settings") == "src/settings.py"
    # ...which may themselves contain ep.io variables.
    text = "[static]\nd = %(data_directory)s\n/media = %(d)s/media\n"
    assert get(text, "static", "/media") == "%(data_directory)s/media"


@pytest.mark.parametrize(
    ("value", "words"),
    [
        ("%(nope)s", "unknown variable %(nope)s"),
        ("%(port)s and %d", "'%' must be followed by '%' or '(name)s'"),
        ("%(port)s %", "'%' must be followed"),
        ("%(port)d", "must be followed by 's'"),
        ("%(port", "'%' must be followed"),
        ("%(k)s", "refers to itself"),
    ],
)
def test_bad_interpolation_names_the_line(value: str, words: str) -> None:
    doc = parse_ini(f"[a]\n\nk = {value}\n")
    sect = doc.sections["a"]
    with pytest.raises(AppSpecError) as info:
        interpolate(doc, sect, sect.options["k"])
    [problem] = info.value.problems
    assert problem.line == 3 and words in problem.message
