"""A real headless Chromium driven over the DevTools protocol, for the
dashboard's tests: load a page, wait for what it shows, click like a person
(mouse events at an element's place), and take screenshots.

The protocol runs over a pipe (`--remote-debugging-pipe`: Chromium reads
commands on fd 3 and answers on fd 4, each message JSON ended by a NUL), so
no WebSocket client is needed and no port is opened.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
# A quiet headless Chromium: no sandbox (tests run as root), nothing fetched
# from the network but the pages under test.
HEADLESS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]
FLAGS = [*HEADLESS, "--remote-debugging-pipe"]


class BrowserError(Exception):
    pass


class Browser:
    """One Chromium with one page; close() (or `with`) ends it."""

    def __init__(self, profile: Path, width: int = 1280, height: int = 900) -> None:
        to_chrome_r, self._to_chrome = os.pipe()
        self._from_chrome, from_chrome_w = os.pipe()
        # Chromium wants the pipe on its fds 3 and 4: bash puts the ends
        # there and execs it (no preexec_fn, unsafe in a process with threads,
        # as a test serving an API from a thread is). The ends it moves are
        # first numbered 10 or above, so that neither is itself 3 or 4.
        r = fcntl.fcntl(to_chrome_r, fcntl.F_DUPFD_CLOEXEC, 10)
        w = fcntl.fcntl(from_chrome_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_chrome_r)
        os.close(from_chrome_w)
        move = f'exec "$0" "$@" 3<&{r} 4>&{w} {r}<&- {w}>&-'
        self.proc = subprocess.Popen(
            [
                "/bin/bash",  # (dash redirects fds 0 to 9 only)
                "-c",
                move,
                CHROMIUM,
                *FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={width},{height}",
            ],
            pass_fds=(r, w),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        os.close(r)
        os.close(w)
        self._buf = b""
        self._next = 0
        self.size = (width, height)
        try:
            targets = self._call("Target.getTargets")["targetInfos"]
            pages = [t for t in targets if t["type"] == "page"]
            target = (
                pages[0]["targetId"]
                if pages
                else self._call("Target.createTarget", url="about:blank")["targetId"]
            )
            self._session = self._call("Target.attachToTarget", targetId=target, flatten=True)[
                "sessionId"
            ]
            self.call("Page.enable")
            self.call("Runtime.enable")
            self.call(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=height,
                deviceScaleFactor=1,
                mobile=False,
            )
        except BaseException:
            self.close()
            raise

    # ---------------------------------------------------------------- protocol

    def _send(self, msg: dict[str, Any]) -> None:
        data = json.dumps(msg).encode() + b"\0"
        while data:
            data = data[os.write(self._to_chrome, data) :]

    def _receive(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_chrome], [], [], left)[0]:
                raise BrowserError("Chromium did not answer in time")
            chunk = os.read(self._from_chrome, 1 << 20)
            if not chunk:
                raise BrowserError(f"Chromium exited ({self.proc.poll()})")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)  # type: ignore[no-any-return]

    def _call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self._next += 1
        msg: dict[str, Any] = {"id": self._next, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        self._send(msg)
        deadline = time.monotonic() + 60
        while True:
            got = self._receive(deadline)
            if got.get("id") == self._next:  # (events in between are not needed)
                if "error" in got:
                    raise BrowserError(f"{method}: {got['error']}")
                return got.get("result", {})  # type: ignore[no-any-return]

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """A command to the page's session."""
        return self._call(method, self._session, **params)

    # ---------------------------------------------------------------- the page

    def open(self, url: str) -> None:
        """Navigate, and return once the new page has loaded (its scripts
        ran): an expression evaluated sooner may find the old page, or a
        document without a body yet. (Page.loadEventFired does not say
        which page loaded: the first about:blank's may come late.)"""
        self.call("Page.navigate", url=url)
        self.wait(
            "document.readyState === 'complete' && location.protocol !== 'about:'",
            f"{url} to load",
        )

    def js(self, expression: str) -> Any:
        got = self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in got:
            raise BrowserError(f"{expression}: {got['exceptionDetails']}")
        return got["result"].get("value")

    def wait(self, expression: str, what: str, timeout: float = 60) -> Any:
        """Until `expression` is truthy in the page; its value (as JSON: a
        DOM node comes back as {}, which is falsy here: test for it with !!)."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.js(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out waiting for {what}")
            time.sleep(0.1)

    def click(self, selector: str) -> None:
        """Press and release the mouse on the element's middle, as a person would."""
        box = self.wait(
            f"""(() => {{ const el = document.querySelector({json.dumps(selector)});
                if (!el || el.disabled) return null;
                el.scrollIntoView({{block: "center"}});
                const r = el.getBoundingClientRect();
                return r.width && r.height ? {{x: r.x + r.width / 2, y: r.y + r.height / 2}} : null;
            }})()""",
            f"{selector} to be clickable",
        )
        for kind in ("mousePressed", "mouseReleased"):
            self.call(
                "Input.dispatchMouseEvent",
                type=kind,
                x=box["x"],
                y=box["y"],
                button="left",
                clickCount=1,
            )

    def type_into(self, selector: str, text: str) -> None:
        """Focus a field, clear it and type `text` as keystrokes would insert it."""
        self.click(selector)
        self.js(f"document.querySelector({json.dumps(selector)}).select()")
        self.call("Input.insertText", text=text)

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    # ---------------------------------------------------------------- life

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self._call("Browser.close")
            except (BrowserError, OSError):
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # with its renderers
                self.proc.wait()
        for fd in (self._to_chrome, self._from_chrome):
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
