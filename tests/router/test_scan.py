"""The plain-head scanners (scan.py) against httptools, the parser they stand in for.

Whatever a scanner accepts, httptools must parse the same way (method, target,
headers, framing, keep-alive); whatever it declines goes to httptools, so
declining is always safe and only the accepted cases can be wrong.
"""

from __future__ import annotations

from typing import Any

import pytest
from httptools import HttpRequestParser, HttpResponseParser

from roost.router.scan import request_head, response_head


class _Request:
    """What httptools reports, asked while it is on the message (after it
    returns, it is ready for the next one and its answers are reset)."""

    def __init__(self) -> None:
        self.parser: Any = None
        self.url = b""
        self.headers: list[bytes] = []
        self.complete = 0
        self.facts: tuple[bytes, bool, bool, str] | None = None

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers += [name, value]

    def on_headers_complete(self) -> None:
        p = self.parser
        self.facts = (
            p.get_method(),
            p.should_keep_alive(),
            p.should_upgrade(),
            p.get_http_version(),
        )

    def on_message_complete(self) -> None:
        self.complete += 1


def _httptools_request(data: bytes) -> _Request:
    seen = _Request()
    seen.parser = HttpRequestParser(seen)
    seen.parser.feed_data(data)
    return seen


def _scan_request(data: bytes, max_headers: int = 100) -> tuple[bytes, bytes, list[bytes]] | None:
    headers: list[bytes] = []
    end = request_head(data, headers, max_headers)
    if not end:
        return None
    start = 4 if data[0] == ord("G") else 5
    return data[: start - 1], data[start:end], headers


PLAIN_REQUESTS = [
    b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n",
    b"GET / HTTP/1.1\r\n\r\n",
    b"HEAD /x/y?q=1&r=%20 HTTP/1.1\r\nHost: a\r\nUser-Agent: wrk/4 (x; y)\r\n\r\n",
    b"GET /p HTTP/1.1\r\nhOsT:    a.example\r\nAccept: */*\r\nX-Empty:\r\n"
    b"Authorization: Basic dTpw\r\nX-Request-Id: abc\r\nReferer: http://r/\r\n\r\n",
]

NOT_PLAIN_REQUESTS = [
    b"POST / HTTP/1.1\r\nHost: a\r\n\r\n",  # only GET and HEAD
    b"GET / HTTP/1.0\r\nHost: a\r\n\r\n",
    b"GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n",  # absolute form
    b"GET * HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET /a#frag HTTP/1.1\r\nHost: a\r\n\r\n",
    b'GET /"q" HTTP/1.1\r\nHost: a\r\n\r\n',
    b"GET / HTTP/1.1\r\nHost: a\r\n",  # incomplete
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",  # pipelined
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\nxyz",  # bytes after the head
    b"GET / HTTP/1.1\r\nHost: a\nX: y\r\n\r\n",  # bare LF
    b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",  # space before the colon
    b"GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n",  # obsolete folding
    b"GET / HTTP/1.1\r\nHost: a \r\n\r\n",  # trailing blank
    b"GET / HTTP/1.1\r\nHost: a\xe9\r\n\r\n",  # not ASCII
    b"GET / HTTP/1.1\r\nHost: a\x01\r\n\r\n",  # control byte
    b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nKeep-Alive: 5\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nPROXY-CONNECTION: x\r\n\r\n",
]


@pytest.mark.parametrize("data", PLAIN_REQUESTS)
def test_a_plain_request_is_read_as_httptools_reads_it(data: bytes) -> None:
    scanned = _scan_request(data)
    assert scanned is not None
    method, url, headers = scanned
    seen = _httptools_request(data)
    assert seen.complete == 1
    assert seen.facts == (method, True, False, "1.1")
    assert url == seen.url
    assert headers == seen.headers


@pytest.mark.parametrize("data", NOT_PLAIN_REQUESTS)
def test_anything_else_is_left_to_httptools(data: bytes) -> None:
    assert _scan_request(data) is None


def test_too_many_headers_are_left_to_httptools() -> None:
    data = b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(5)) + b"\r\n"
    assert _scan_request(data, max_headers=5) is not None
    assert _scan_request(data, max_headers=4) is None


class _Response:
    def __init__(self) -> None:
        self.parser: Any = None
        self.body = b""
        self.complete = 0
        self.facts: tuple[int, bool] | None = None

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete += 1
        self.facts = (self.parser.get_status_code(), self.parser.should_keep_alive())


PLAIN_RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 404 Not Found\r\nServer: x\r\ncontent-length:0\r\nConnection: Keep-Alive\r\n\r\n",
    b"HTTP/1.1 500 \r\nContent-Type: text/plain\r\nCONTENT-LENGTH:  3\r\n\r\nabc",
]

NOT_PLAIN_RESPONSES = [
    b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhell",  # the rest in a later read
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello!",  # bytes past the end
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n",  # head incomplete
    b"HTTP/1.1 200 OK\r\n\r\nhello",  # delimited by close
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nKeep-Alive: timeout=5\r\n\r\nhello",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX: a\nY: b\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nContent-Length : 5\r\n\r\nhello",
    b"HTTP/1.1 2000 OK\r\nContent-Length: 5\r\n\r\nhello",
]


@pytest.mark.parametrize("data", PLAIN_RESPONSES)
def test_a_plain_response_is_framed_as_httptools_frames_it(data: bytes) -> None:
    end, code = response_head(data)
    assert end
    seen = _Response()
    seen.parser = HttpResponseParser(seen)
    seen.parser.feed_data(data)
    assert seen.complete == 1
    assert seen.facts == (code, True)
    assert data[end:] == seen.body


@pytest.mark.parametrize("data", NOT_PLAIN_RESPONSES)
def test_any_other_response_is_left_to_httptools(data: bytes) -> None:
    assert response_head(data) == (0, 0)
