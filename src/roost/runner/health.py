"""Whether a new web instance is fit for traffic: its health check. Pure.

An app may declare a check per process type (app.json `healthchecks`, read
into `AppSpec.healthchecks` as `HealthCheck`): GET `path` must answer a
status in the expected range (2xx/3xx by default) and, when set, a body
containing `content`, within `timeout`; the first try `initial_delay` after
the start, then every `interval`, at most `attempts` tries. Without one, a
web instance must answer `GET /` with any status below 500: a Django app
answering 400 to the probe's Host is serving, one answering 500 is not.

Connection refused is not an attempt: nothing listens yet, the process is
still starting (the runner's startup deadline bounds that wait). Every try
that reached a listener counts, whether it answered wrongly or not in time.
The failure message is the check's last answer, e.g. "GET /health answered
500 after 3 attempts (expected 200-399)": it ends the deploy's log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from roost.wire.messages import InstanceAssignment

# The check a web instance gets when its app declares none. The attempt
# timeout is long because gunicorn accepts into its backlog before a worker
# has booted: the first answer comes when the first worker is ready.
DEFAULT_TIMEOUT_S = 30.0
DEFAULT_ATTEMPTS = 3
DEFAULT_INTERVAL_S = 1.0


@dataclass(frozen=True)
class Check:
    path: str = "/"
    status_min: int = 100
    status_max: int = 499
    content: str = ""
    timeout_s: float = DEFAULT_TIMEOUT_S
    attempts: int = DEFAULT_ATTEMPTS
    initial_delay_s: float = 0.0
    interval_s: float = DEFAULT_INTERVAL_S
    declared: bool = False


DEFAULT = Check()


def check_for(a: InstanceAssignment) -> Check:
    """The check this instance must pass: its process type's declared one, or
    the default."""
    hc = a.spec.healthchecks.get(a.process_type)
    if hc is None:
        return DEFAULT
    return Check(
        path=hc.path if hc.path.startswith("/") else "/" + hc.path,
        status_min=hc.status_min,
        status_max=hc.status_max,
        content=hc.content,
        timeout_s=max(0.1, hc.timeout),
        attempts=max(1, hc.attempts),
        initial_delay_s=max(0.0, hc.initial_delay),
        interval_s=max(0.0, hc.interval),
        declared=True,
    )


def budget(check: Check) -> float:
    """The longest a check can take once something listens: every attempt
    timing out, with the intervals and the initial delay between them."""
    tries = check.attempts
    return check.initial_delay_s + tries * check.timeout_s + (tries - 1) * check.interval_s


@dataclass(frozen=True)
class Answer:
    """One try: the HTTP status (0: none) and the body's start, or why there
    was no answer. `refused`: nothing listened (not counted as an attempt)."""

    status: int = 0
    body: bytes = b""
    error: str = ""
    refused: bool = False


@dataclass(frozen=True)
class Progress:
    attempts: int = 0
    last: Answer | None = None


@dataclass(frozen=True)
class Verdict:
    kind: Literal["pass", "fail", "again"]
    progress: Progress
    delay_s: float = 0.0  # "again": wait this long before the next try
    message: str = ""  # "fail": the check's last answer


def passed(check: Check, answer: Answer) -> bool:
    if not answer.status or not check.status_min <= answer.status <= check.status_max:
        return False
    return not check.content or check.content.encode() in answer.body


def describe(check: Check, answer: Answer) -> str:
    """What one try got, as a user reads it after 'GET /path'."""
    if not answer.status:
        return answer.error or "gave no HTTP answer"
    if check.status_min <= answer.status <= check.status_max and check.content:
        return f"answered {answer.status} without {check.content!r} in its body"
    return f"answered {answer.status}"


def expected(check: Check) -> str:
    if not check.declared:
        return "expected a status below 500"
    return f"expected {check.status_min}-{check.status_max}"


def judge(check: Check, progress: Progress, answer: Answer, retry_s: float) -> Verdict:
    """After one try: pass, fail with the last answer, or try again after a
    delay (`retry_s` when nothing listened yet, the check's interval else)."""
    if answer.refused:
        return Verdict("again", Progress(progress.attempts, answer), retry_s)
    now = Progress(progress.attempts + 1, answer)
    if passed(check, answer):
        return Verdict("pass", now)
    if now.attempts >= check.attempts:
        return Verdict("fail", now, message=failure(check, now))
    return Verdict("again", now, check.interval_s)


def watch(check: Check, progress: Progress, answer: Answer, every_s: float) -> Verdict:
    """After one try of a running instance's declared check (it passed once):
    again after `every_s` when it passes (the count starts over), after the
    check's interval when not, and fail after `attempts` failures in a row.
    Nothing listening now counts as a failure: the process was serving."""
    if passed(check, answer):
        return Verdict("again", Progress(0, answer), every_s)
    now = Progress(progress.attempts + 1, answer)
    if now.attempts >= check.attempts:
        return Verdict("fail", now, message=failure(check, now))
    return Verdict("again", now, check.interval_s)


def failure(check: Check, progress: Progress) -> str:
    n = progress.attempts
    last = progress.last or Answer(error="gave no HTTP answer")
    tries = f"{n} attempt" + ("" if n == 1 else "s")
    return f"GET {check.path} {describe(check, last)} after {tries} ({expected(check)})"
