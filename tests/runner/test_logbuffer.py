"""Line splitting and the bounded, drop-oldest log buffer (pure)."""

from __future__ import annotations

from roost.runner.logbuffer import DROP_NOTICE, LineSplitter, LogBuffer
from roost.wire.messages import LogLine


def line(app: str, text: str) -> LogLine:
    return LogLine(app=app, ts=1.0, source="app", process="web.1", line=text)


def test_splitter_joins_partial_lines_across_chunks() -> None:
    s = LineSplitter()
    assert s.feed(b"hel") == []
    assert s.feed(b"lo\nwor") == ["hello"]
    assert s.feed(b"ld\r\n\nx") == ["world", ""]
    assert s.flush() == ["x"]
    assert s.flush() == []


def test_splitter_cuts_long_lines_into_bounded_pieces() -> None:
    s = LineSplitter(max_line=4)
    assert s.feed(b"abcdefghij") == ["abcd", "efgh"]
    assert s.feed(b"k\nxyzw\n") == ["ijk", "xyzw"]
    assert s._partial == bytearray()
    # A line of exactly max_line bytes whose newline comes later is not split.
    assert s.feed(b"1234") == []
    assert s.feed(b"\n") == ["1234"]


def test_splitter_replaces_invalid_utf8() -> None:
    assert LineSplitter().feed("é\n".encode() + b"\xff\n") == ["é", "\ufffd"]


def test_buffer_drops_oldest_and_says_so_first() -> None:
    buf = LogBuffer(max_lines=3, clock=lambda: 42.0)
    for i in range(5):
        buf.push(line("a" if i % 2 else "b", f"l{i}"))
    assert len(buf) == 3 and buf.dropped == {"b": 1, "a": 1}
    batch = buf.take(10)
    assert [(x.app, x.source, x.ts) for x in batch[:2]] == [
        ("a", "platform", 42.0),
        ("b", "platform", 42.0),
    ]
    assert batch[0].line == f"1 {DROP_NOTICE}"
    assert [x.line for x in batch[2:]] == ["l2", "l3", "l4"]
    assert buf.take(10) == []


def test_buffer_takes_in_batches_and_requeues_ahead_of_newer_lines() -> None:
    buf = LogBuffer(max_lines=100, clock=lambda: 0.0)
    for i in range(5):
        buf.push(line("a", f"l{i}"))
    first = buf.take(2)
    assert [x.line for x in first] == ["l0", "l1"]
    buf.push(line("a", "l5"))
    buf.requeue(first)
    assert [x.line for x in buf.take(100)] == ["l0", "l1", "l2", "l3", "l4", "l5"]


def test_requeue_past_capacity_keeps_newest_and_counts_drops_once() -> None:
    buf = LogBuffer(max_lines=4, clock=lambda: 0.0)
    for i in range(6):
        buf.push(line("a", f"l{i}"))
    batch = buf.take(3)  # notice (2 dropped) + l2, l3
    assert batch[0].source == "platform" and len(batch) == 3
    for i in range(6, 9):
        buf.push(line("a", f"l{i}"))
    buf.requeue(batch)  # l2, l3 go back ahead of l4..l8: over capacity again
    out = buf.take(100)
    assert out[0].line == f"5 {DROP_NOTICE}"  # 2 earlier + l2, l3, l4 now
    assert [x.line for x in out[1:]] == ["l5", "l6", "l7", "l8"]
