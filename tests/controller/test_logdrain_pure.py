"""Log drains' pure parts: URLs checked when added, RFC 5424 framing, the
bounded queue and its backoff (fake clock), and retention plans."""

from __future__ import annotations

import re

import pytest

from roost.controller import logretention
from roost.controller.logdrain_frame import (
    batch_headers,
    frame,
    frames,
    frames_each,
    message,
    timestamp,
)
from roost.controller.logdrain_queue import DrainQueue
from roost.controller.logdrain_url import (
    BadDrainUrl,
    address_refusal,
    parse_drain_url,
    target_refusal,
)
from roost.proc.backoff import Backoff
from roost.wire.messages import LogLine

# ------------------------------------------------------------ URLs


@pytest.mark.parametrize(
    ("url", "kind", "host", "port", "tls"),
    [
        ("syslog://logs.example.com:514", "syslog", "logs.example.com", 514, False),
        ("syslog+tls://10.1.2.3:6514", "syslog+tls", "10.1.2.3", 6514, True),
        ("syslog://[::1]:601", "syslog", "::1", 601, False),
        ("https://user:pw@logs.example.com/drain?k=1", "https", "logs.example.com", 443, True),
        ("https://127.0.0.1:8443/x", "https", "127.0.0.1", 8443, True),
    ],
)
def test_drain_urls_that_name_a_receiver(
    url: str, kind: str, host: str, port: int, tls: bool
) -> None:
    t = parse_drain_url(url)
    assert (t.kind, t.host, t.port, t.tls, t.url) == (kind, host, port, tls, url)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("", "1 to"),
        ("http://logs.example.com/", "not http"),
        ("ftp://x:21", "not ftp"),
        ("logs.example.com:514", "not logs.example.com"),
        ("syslog://logs.example.com", "names its port"),
        ("syslog://:514", "names a host"),
        ("syslog://logs.example.com:99999", "malformed"),
        ("syslog://logs.example.com:51x", "malformed"),
        ("syslog://u:p@logs.example.com:514", "no user or password"),
        ("syslog+tls://logs.example.com:6514/path", "no path"),
        ("syslog://bad_host!.example:514", "neither a host name"),
        ("https://-bad-.example.com/", "neither a host name"),
        ("https://logs.example.com/a b", "no spaces"),
        ("https://logs.example.com/\x00", "no spaces"),
        ("https://" + "a" * 2100 + ".com/", "1 to"),
    ],
)
def test_malformed_drain_urls_are_refused_with_the_reason(url: str, why: str) -> None:
    with pytest.raises(BadDrainUrl, match=re.escape(why)):
        parse_drain_url(url)


@pytest.mark.parametrize(
    ("ip", "public"),
    [("8.8.8.8", True), ("2606:4700::1111", True), ("127.0.0.1", False), ("10.0.0.1", False),
     ("172.16.5.5", False), ("192.168.1.1", False), ("169.254.169.254", False), ("::1", False),
     ("fe80::1%eth0", False), ("fd00::1", False), ("::ffff:127.0.0.1", False), ("0.0.0.0", False),
     ("224.0.0.1", False), ("100.64.0.1", False)],
)  # fmt: skip
def test_only_public_addresses_are_drains_unless_allowed(ip: str, public: bool) -> None:
    assert (address_refusal(ip) is None) is public


def test_addresses_and_localhost_are_checked_when_added_names_when_resolved() -> None:
    for url in ("syslog://127.0.0.1:514", "https://localhost/x", "syslog://app.localhost:1"):
        assert "ROOST_LOG_DRAIN_PRIVATE=on" in (target_refusal(parse_drain_url(url)) or "")
    for url in ("syslog://8.8.8.8:514", "https://logs.example.com/x"):
        assert target_refusal(parse_drain_url(url)) is None


# ------------------------------------------------------------ framing


def _line(text: str, **kw: str) -> LogLine:
    fields = {"app": "shop", "source": "app", "process": "web.1", "stream": "stdout", **kw}
    return LogLine(ts=1700000000.25, line=text, **fields)


def test_a_line_is_an_rfc5424_message_as_heroku_sends() -> None:
    assert message(_line("hello world"), "d.abc") == (
        b"<190>1 2023-11-14T22:13:20.250000+00:00 shop app web.1 d.abc - hello world"
    )
    # stderr is err; the platform's own lines say roost; no process is NIL.
    assert message(_line("oops", stream="stderr"), "t").startswith(b"<187>1 ")
    assert b" shop roost - t - " in message(_line("x", source="platform", process=""), "t")


def test_header_fields_hold_printable_ascii_only_and_the_rfc_lengths() -> None:
    m = message(_line("x", app="caf\u00e9 app", process="w" * 300), "tok en")
    header = m.split(b" ")
    assert header[2] == b"caf__app"
    assert header[4] == b"w" * 128
    assert header[5] == b"tok_en"


def test_octet_counting_counts_bytes_and_carries_newlines() -> None:
    m = message(_line("z\u00fcrich\nsecond line"), "t")
    f = frame(m)
    size, _, rest = f.partition(b" ")
    assert int(size) == len(rest) == len(m)
    assert rest == m and b"\nsecond line" in rest


def test_a_long_line_is_cut_on_a_character_boundary() -> None:
    m = message(_line("\u00e9" * 10_000), "d." + "0" * 30)  # a token as long as they get
    assert len(m) <= 8192
    body = m.split(b" - ", 1)[1]
    assert body.decode("utf-8") == "\u00e9" * (len(body) // 2)  # whole characters only
    assert len(m) >= 8191  # cut as late as a whole character allows


def test_lines_framed_for_several_drains_differ_only_by_token() -> None:
    lines = [_line("a"), _line("b\u00fc", stream="stderr")]
    one, two = frames_each(lines, ["d.one", "d.two"])
    assert one == frames(lines, "d.one") and two == frames(lines, "d.two")
    assert [f.replace(b"d.one", b"d.two") for f in one] == two


def test_timestamps_are_utc_with_microseconds() -> None:
    assert timestamp(0.0) == "1970-01-01T00:00:00.000000+00:00"
    assert timestamp(1.9999999) == "1970-01-01T00:00:01.999999+00:00"


def test_an_https_batch_is_frames_back_to_back_with_logplex_headers() -> None:
    fs = frames([_line("a"), _line("b")], "d.x")
    body = b"".join(fs)
    # A receiver splits the body by the counts alone.
    got, rest = [], body
    while rest:
        size, _, rest = rest.partition(b" ")
        got.append(rest[: int(size)])
        rest = rest[int(size) :]
    assert [g.rsplit(b" ", 1)[1] for g in got] == [b"a", b"b"]
    h = batch_headers("d.x", 2, "f1")
    assert h["Content-Type"] == "application/logplex-1"
    assert (h["Logplex-Msg-Count"], h["Logplex-Drain-Token"], h["Logplex-Frame-Id"]) == (
        "2",
        "d.x",
        "f1",
    )


# ------------------------------------------------------------ the queue


def _q(**kw: int) -> DrainQueue:
    return DrainQueue(backoff=Backoff(base_s=1.0, max_s=8.0), rand=lambda: 0.5, **kw)


def test_the_queue_drops_the_oldest_past_its_bounds_and_counts_them() -> None:
    q = _q(max_lines=3, max_bytes=1000)
    q.offer([b"1", b"2", b"3", b"4", b"5"])
    assert q.dropped == 2 and len(q) == 3
    assert q.take(0.0, 10, 1000) == [b"3", b"4", b"5"]
    q = _q(max_lines=100, max_bytes=10)
    q.offer([b"aaaa", b"bbbb", b"cccc"])  # 12 bytes: the first goes
    assert q.dropped == 1 and q.take(0.0, 10, 100) == [b"bbbb", b"cccc"]


def test_batches_respect_line_and_byte_limits_but_always_carry_one() -> None:
    q = _q()
    q.offer([b"x" * 10] * 5)
    assert len(q.take(0.0, 2, 1000)) == 2
    q.sent([b"", b""], 0.0, 0.0)
    assert len(q.take(0.0, 10, 25)) == 2  # a third would pass 25 bytes
    q.sent([b"", b""], 0.0, 0.0)
    big = _q()
    big.offer([b"y" * 50])
    assert big.take(0.0, 10, 20) == [b"y" * 50]  # larger than a batch: alone


def test_a_failed_batch_goes_back_and_waits_a_growing_backoff() -> None:
    q = _q()
    q.offer([b"a", b"b"])
    batch = q.take(100.0, 10, 100)
    assert q.take(100.0, 10, 100) == [] and q.wait_s(100.0) is None  # one in flight
    assert q.failed(batch, "refused", 100.0, 5.0) == 1.0
    assert q.counts().failing and q.counts().last_error == "refused"
    assert q.wait_s(100.0) == 1.0 and q.take(100.5, 10, 100) == []
    batch = q.take(101.0, 10, 100)
    assert batch == [b"a", b"b"]  # the same lines, in order
    assert q.failed(batch, "refused", 101.0, 6.0) == 2.0
    for _ in range(5):
        q.failed(q.take(1000.0, 10, 100), "refused", 1000.0, 7.0)
    assert q.wait_s(1000.0) == 8.0  # capped
    q.sent(q.take(1008.0, 10, 100), 1008.0, 9.0)
    k = q.counts()
    assert (k.delivered, k.dropped, k.failing, k.last_ok_at) == (2, 0, False, 9.0)
    assert k.last_error == "refused"  # kept for `roost drains list`
    assert q.wait_s(1008.0) is None


def test_a_failed_batch_back_in_a_full_queue_drops_the_oldest() -> None:
    q = _q(max_lines=3)
    q.offer([b"1", b"2"])
    batch = q.take(0.0, 10, 100)
    q.offer([b"3", b"4"])  # while the batch is in flight
    q.failed(batch, "timed out", 0.0, 0.0)
    assert q.dropped == 1 and q.take(10.0, 10, 100) == [b"2", b"3", b"4"]


# ------------------------------------------------------------ retention


def test_retention_plans_count_for_apps_that_logged_and_age_for_all_that_chose_one() -> None:
    R = logretention.Retention
    chosen = {2: R(20_000, None), 3: R(None, 7.0), 4: R(3000, 1.0)}
    trims = logretention.plan({1, 2, 4}, chosen, 5000, now=10 * 86400.0)
    assert trims == [
        logretention.Trim(1, 5000, None),  # the platform's default
        logretention.Trim(2, 20_000, None),
        logretention.Trim(3, None, 3 * 86400.0),  # quiet, but its lines age
        logretention.Trim(4, 3000, 9 * 86400.0),
    ]


@pytest.mark.parametrize(
    ("lines", "days", "ok"),
    [(None, None, True), (1500, 0.5, True), (1499, None, False), (None, 0.0, False),
     (10_000_001, None, False), (None, 3651.0, False), (5000, 30.0, True)],
)  # fmt: skip
def test_retention_bounds(lines: int | None, days: float | None, ok: bool) -> None:
    if ok:
        logretention.check(lines, days)
    else:
        with pytest.raises(logretention.BadRetention):
            logretention.check(lines, days)
