"""How gunicorn serves an app's WSGI process: workers, threads, preloading.

Why these defaults (issue 21, app density): every instance used to import
the app in each of its two workers, so nothing of the app was shared. With
`--preload` the arbiter imports the app once before it forks, and the
workers share those pages copy-on-write: examples/hello's two instances
hold 70 MB instead of 92 (PSS, bench/footprint.py). The worker model
stays gunicorn's sync worker, two per instance: the runner's graceful
stop relies on it (it waits for the listener's accept queue to empty
before TERM, and sync workers stop accepting at TERM; a threaded worker
takes connections into its own poller instead, where a stop may close
them unanswered), and an app's code need not be thread-safe.

An app changes them with config vars (the API refuses a bad value; a value
stored before it checked counts as unset):

  ROOST_WEB_WORKERS   worker processes per instance, 1..32 (2)
  ROOST_WEB_THREADS   threads per worker, 1..64 (1); more than 1 runs
                      gunicorn's gthread worker (an app whose code allows
                      threads: one worker of 4 threads holds less than two
                      processes and serves as many requests at once)
  ROOST_WEB_PRELOAD   on/off (on): off imports the app in each worker, for
                      an app that opens a connection or a thread at import,
                      which a fork would share between workers
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

# The module an instance's arbiter preloads the app through, written beside
# its bundle_config.py (first on its PYTHONPATH): gunicorn reports a
# RuntimeError raised while it preloads by its message alone ("Error: boom"),
# with neither its type nor its traceback, which are what a failed release
# shows its author; this module prints them.
PRELOAD_MODULE = "roost_preload"

WORKERS_VAR = "ROOST_WEB_WORKERS"
THREADS_VAR = "ROOST_WEB_THREADS"
PRELOAD_VAR = "ROOST_WEB_PRELOAD"
MAX_WORKERS = 32
MAX_THREADS = 64
_ON = ("on", "true", "yes", "1")
_OFF = ("off", "false", "no", "0")


@dataclass(frozen=True)
class WebServing:
    workers: int = 2
    threads: int = 1
    preload: bool = True

    def gunicorn_options(self, async_type: str) -> list[str]:
        """gunicorn's options for these (`async_type`: the app's own worker
        class, e.g. gevent, which has no threads)."""
        options = ["--workers", str(self.workers)]
        if async_type:
            options += ["--worker-class", async_type]
        elif self.threads > 1:
            options += ["--worker-class", "gthread", "--threads", str(self.threads)]
        if self.preload:
            options.append("--preload")
        return options


def preload_source(entrypoint: str) -> str:
    """`PRELOAD_MODULE`'s text for the app's `entrypoint` (module:callable)."""
    return (
        f'"""{entrypoint}, preloaded by gunicorn\'s arbiter (written by Roost)."""\n\n'
        "import sys\n"
        "import traceback\n\n"
        "from gunicorn.util import import_app\n\n"
        "try:\n"
        f"    application = import_app({entrypoint!r})\n"
        "except RuntimeError:  # gunicorn would print its message alone\n"
        "    traceback.print_exc()\n"
        "    sys.exit(1)\n"
    )


def _whole(key: str, value: str, top: int) -> int:
    try:
        n = int(value.strip())
    except ValueError:
        n = 0
    if not 1 <= n <= top:
        raise ValueError(f"{key} must be a whole number from 1 to {top}, not {value!r}")
    return n


def _switch(key: str, value: str) -> bool:
    word = value.strip().lower()
    if word in _ON:
        return True
    if word in _OFF:
        return False
    raise ValueError(f"{key} must be on or off, not {value!r}")


def check(key: str, value: str) -> None:
    """ValueError saying why, when `key` is one of these and `value` is not
    a value it takes; anything else passes."""
    if key == WORKERS_VAR:
        _whole(key, value, MAX_WORKERS)
    elif key == THREADS_VAR:
        _whole(key, value, MAX_THREADS)
    elif key == PRELOAD_VAR:
        _switch(key, value)


def web_serving(env: Mapping[str, str]) -> WebServing:
    """The app's choices from its config vars, the defaults for the rest."""
    default = WebServing()
    workers, threads, preload = default.workers, default.threads, default.preload
    try:
        workers = _whole(WORKERS_VAR, env[WORKERS_VAR], MAX_WORKERS)
    except (KeyError, ValueError):
        pass
    try:
        threads = _whole(THREADS_VAR, env[THREADS_VAR], MAX_THREADS)
    except (KeyError, ValueError):
        pass
    try:
        preload = _switch(PRELOAD_VAR, env[PRELOAD_VAR])
    except (KeyError, ValueError):
        pass
    return WebServing(workers, threads, preload)
