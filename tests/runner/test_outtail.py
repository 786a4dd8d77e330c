"""The reason an instance's exit gives keeps the app's own exception even
when a server's own output pushed it out of the tail (gunicorn with two
workers that cannot import the app: their tracebacks, then its master's)."""

from __future__ import annotations

from roost.runner.outtail import FIRST, Tail

# A frame is two lines (where, then the source line), as Python prints it.
FRAMES = [
    line
    for i in range(12)
    for line in (f'  File "/app/lib/site-packages/gunicorn/x{i}.py", line {i}, in f', "    f()")
]


def worker(pid: int) -> list[str]:
    return [
        f"[2026-12-06 08:07:02 +0000] [{pid}] [INFO] Booting worker with pid: {pid}",
        f"[2026-12-06 08:07:02 +0000] [{pid}] [ERROR] Exception in worker process",
        "Traceback (most recent call last):",
        *FRAMES,
        '  File "/app/code/app.py", line 9, in <module>',
        "    raise RuntimeError('boom at import')",
        "RuntimeError: boom at import",
        f"[2026-12-06 08:07:02 +0000] [{pid}] [INFO] Worker exiting (pid: {pid})",
    ]


MASTER = [
    "[2026-12-06 08:07:03 +0000] [7] [ERROR] Worker (pid:8) exited with code 3",
    "[2026-12-06 08:07:03 +0000] [7] [ERROR] Shutting down: Master",
    "[2026-12-06 08:07:03 +0000] [7] [ERROR] Reason: Worker failed to boot.",
    "Traceback (most recent call last):",
    *FRAMES,
    "    raise HaltServer(reason, self.WORKER_BOOT_ERROR)",
    "gunicorn.errors.HaltServer: <HaltServer 'Worker failed to boot.' 3>",
]


def fed(lines: list[str], size: int = 30) -> list[str]:
    tail = Tail(size)
    for line in lines:
        tail.add(line)
    return tail.lines()


def test_the_apps_exception_is_kept_when_the_servers_output_pushed_it_out() -> None:
    out = fed([*worker(8), *worker(9), *MASTER])
    assert "RuntimeError: boom at import" not in out[:-1]  # 30 lines: gone from the tail
    assert out[-1] == FIRST + "RuntimeError: boom at import"
    assert out[-2].startswith("gunicorn.errors.HaltServer")


def test_nothing_is_added_when_it_is_still_in_the_tail_or_there_is_none() -> None:
    assert fed(worker(8), size=40) == worker(8)
    plain = ["listening on :8000", "bye"]
    assert fed(plain) == plain
    # A line that looks like an exception outside any traceback is not one.
    assert fed(["ValueError: not a traceback", *["x"] * 40]) == ["x"] * 30
