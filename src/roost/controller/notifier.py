"""Sends stored alerts: the scheduler lease holder's delivery loop (notify.py tells the story).

Every POLL_S the lease holder reads the deliveries whose try is due, sends
them side by side (a webhook POST through httpx, an e-mail through smtplib
on a worker thread), each within SEND_TIMEOUT_S, and writes each one's
outcome (`notify.after_try`: delivered, or the next try after a backoff,
or failed for good). A replica that is not the holder sends nothing; one
that loses the lease mid-round finishes that round (a receiver may then get
a delivery twice, which its id tells).
"""

from __future__ import annotations

import asyncio
import logging
import random
import smtplib
import ssl
import time
from collections.abc import Callable
from email.message import EmailMessage

import httpx

from roost import aio
from roost.controller import notify
from roost.controller.astore import AsyncStore
from roost.controller.store_notify import Due
from roost.settings import Settings

log = logging.getLogger("roost.controller")

POLL_S = 1.0
SEND_TIMEOUT_S = 15.0
BATCH = 50  # deliveries per round, sent side by side
KEEP_S = 7 * 86400  # ended deliveries are forgotten after a week
PRUNE_EVERY_S = 3600.0


def _error(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text


async def send_webhook(client: httpx.AsyncClient, due: Due) -> str:
    """POST the alert; "" when the receiver answered 2xx, else why not."""
    body = notify.payload(due.alert, due.delivery_id)
    heads = notify.headers(due.alert, due.delivery_id, body, due.secret)
    try:
        resp = await client.post(due.url, content=body, headers=heads)
    except httpx.HTTPError as exc:
        return _error(exc)
    if 200 <= resp.status_code < 300:
        return ""
    # Not its body: what an endpoint answers is not shown to whoever added it.
    return f"HTTP {resp.status_code} {resp.reason_phrase}".strip()


def _smtp_send(server: notify.SmtpServer, msg: EmailMessage, timeout: float) -> None:
    """One message through one SMTP server (blocking: runs on a worker thread)."""
    smtp: smtplib.SMTP
    if server.tls:
        smtp = smtplib.SMTP_SSL(
            server.host, server.port, timeout=timeout, context=ssl.create_default_context()
        )
    else:
        smtp = smtplib.SMTP(server.host, server.port, timeout=timeout)
    with smtp:
        if server.starttls:
            smtp.starttls(context=ssl.create_default_context())
        if server.user:
            smtp.login(server.user, server.password)
        smtp.send_message(msg)


async def send_email(due: Due, settings: Settings) -> str:
    """Mail the alert; "" when the server took it, else why not."""
    target = notify.parse_target(due.url)
    server = target.server
    if server is None:  # mailto: the platform's server
        if not settings.smtp_url:
            return "no SMTP server for mailto: targets: set ROOST_SMTP_URL on the controllers"
        try:
            server = notify.smtp_server(settings.smtp_url)[0]
        except notify.BadTarget as exc:
            return f"ROOST_SMTP_URL: {exc}"
    msg = notify.email(due.alert, target.sender or settings.smtp_from, target.to)
    try:
        await asyncio.to_thread(_smtp_send, server, msg, SEND_TIMEOUT_S)
    except (OSError, smtplib.SMTPException) as exc:
        return _error(exc)
    return ""


async def refusal(target: notify.Target) -> str:
    """Why an app member's target may not be sent to: its host is, or
    resolves to, a private address (`notify.refusal`). A name that does not
    resolve is left to the sender, which fails (and retries) as for any
    unreachable one. (A name re-pointed between this look and the
    connection gets through once: the sender resolves it again.)"""
    host = notify.target_host(target)
    if not host:
        return ""  # mailto: the platform's own server
    try:
        infos = await aio.wait_for(
            asyncio.get_running_loop().getaddrinfo(host, None), SEND_TIMEOUT_S
        )
    except (OSError, TimeoutError):
        infos = []
    return notify.refusal(host, [str(info[4][0]) for info in infos])


class Notifier:
    def __init__(
        self,
        store: AsyncStore,
        settings: Settings,
        is_leader: Callable[[], bool],
        clock: Callable[[], float] = time.time,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.store = store
        self.settings = settings
        self.is_leader = is_leader
        self.clock = clock
        self.jitter = jitter
        self._pruned_at = 0.0

    async def send_due(self) -> int:
        """Try every delivery due now, side by side; how many were tried."""
        due = await self.store.due_deliveries(self.clock(), BATCH)
        if not due:
            return 0
        async with (
            httpx.AsyncClient(timeout=SEND_TIMEOUT_S, follow_redirects=False) as client,
            asyncio.TaskGroup() as tg,
        ):
            for d in due:
                tg.create_task(self._try(client, d))
        return len(due)

    async def _try(self, client: httpx.AsyncClient, due: Due) -> None:
        final = False  # no later try could do better
        try:
            target = notify.parse_target(due.url)
            error = "" if due.trusted else await refusal(target)
            final = bool(error)
            if not error:
                if target.kind == "webhook":
                    sending = send_webhook(client, due)
                else:
                    sending = send_email(due, self.settings)
                error = await aio.wait_for(sending, SEND_TIMEOUT_S + 5)
        except TimeoutError:
            error = f"no answer within {SEND_TIMEOUT_S + 5:.0f}s"
        except notify.BadTarget as exc:  # stored before a stricter check: never sendable
            error, final = str(exc), True
        outcome = notify.after_try(
            due.attempts, error, self.clock(), self.settings.notify_retry_s, self.jitter(), final
        )
        if error:
            log.warning(
                "alert %s to target %d, try %d: %s%s", due.alert.kind, due.target_id,
                outcome.attempts, error, "" if outcome.state == "pending" else " (giving up)",
            )  # fmt: skip
        await self.store.record_delivery(due.delivery_id, outcome)

    async def loop(self) -> None:
        """Every POLL_S while this replica holds the scheduler lease: send what is due."""
        while True:
            await asyncio.sleep(POLL_S)
            if not self.is_leader():
                continue
            try:
                while await self.send_due() == BATCH:
                    pass  # a backlog: the next batch at once
                now = self.clock()
                if now - self._pruned_at >= PRUNE_EVERY_S:
                    self._pruned_at = now
                    await self.store.prune_notify(now - KEEP_S)
            except Exception:
                log.exception("sending alerts failed")
