"""Getting and renewing custom domains' certificates by ACME HTTP-01.

The adapter around `acme_plan` (the decisions) and `acme_client` (the CA).
Only the replica holding the scheduler lease orders: every tick it reads
the domains, the certificates and the order rows, asks `acme_plan.plan`
what is due, and starts one task per due domain (never two for one domain;
at most `PARALLEL` at once). An order:

1. opens a session with the CA under the platform's account (its key made
   once, sealed in the state database, shared by every controller);
2. makes a new key and CSR, orders, and gets the HTTP-01 answers;
3. publishes them (`acme_challenges`, desired state: they ride in the app's
   route to every router) and waits until every router it knows
   (`acme_routers`) serves them, so the CA never looks before they are up;
4. tells the CA, which fetches http://DOMAIN/.well-known/acme-challenge/T
   from whichever router DNS sends it to; waits for its verdict;
5. installs the chain and key (`put_certificate`, the key sealed at rest)
   and records the renewal time; or records the failure's reason and the
   retry time (`acme_plan.failed`: doubling backoff). Either way the
   answers are withdrawn.

A controller that dies mid-order leaves answers published; the next lease
holder withdraws them when it takes the lease. The order row still says
when to try, so the new holder simply orders again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path

import httpx
from cryptography import x509

from roost.controller import acme_plan
from roost.controller.acme_plan import AcmeFailure, Order
from roost.controller.core import Controller
from roost.controller.store_acme import Challenge
from roost.controller.tls import CertificateError, check_certificate
from roost.settings import Settings

log = logging.getLogger("roost.controller.acme")

TICK_S = 2.0
PARALLEL = 4
PUBLISH_TIMEOUT_S = 60.0
PROBE_INTERVAL_S = 0.2
PROBES = 4


def settings_problem(settings: Settings) -> str | None:
    """Why the ACME settings cannot work (the controller refuses to start), or None."""
    directory = settings.acme_directory.strip()
    if not directory:
        return None
    url = urllib.parse.urlsplit(directory)
    if url.scheme != "https" or not url.hostname:
        return f"ROOST_ACME_DIRECTORY must be an https:// URL (RFC 8555), not {directory!r}"
    email = settings.acme_email
    if email and not re.fullmatch(r"[^@\s:/]+@[^@\s:/]+\.[^@\s:/]+", email):
        return f"ROOST_ACME_EMAIL is not an e-mail address: {email!r}"
    bundle = settings.acme_ca_bundle
    if bundle and not Path(bundle).is_file():
        return f"ROOST_ACME_CA_BUNDLE names no file: {bundle!r}"
    for addr in router_addresses(settings):
        host, sep, port = addr.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            return f"ROOST_ACME_ROUTERS: {addr!r} is not HOST:PORT"
    if settings.acme_retry_s <= 0 or settings.acme_renew_days <= 0:
        return "ROOST_ACME_RETRY_S and ROOST_ACME_RENEW_DAYS must be positive"
    return None


def router_addresses(settings: Settings) -> list[str]:
    """HOST:PORT of the routers' HTTP listeners to check an answer on."""
    if settings.acme_routers.strip():
        return [a.strip() for a in settings.acme_routers.split(",") if a.strip()]
    host = settings.bind_host
    if host in ("0.0.0.0", "", "::"):
        host = "127.0.0.1"  # listening everywhere: loopback reaches it
    return [f"{host}:{settings.router_port}"]


def validity(chain_pem: str) -> tuple[float, float]:
    leaf = x509.load_pem_x509_certificates(chain_pem.encode())[0]
    return leaf.not_valid_before_utc.timestamp(), leaf.not_valid_after_utc.timestamp()


class AcmeRunner:
    def __init__(
        self, controller: Controller, settings: Settings, clock: Callable[[], float] = time.time
    ) -> None:
        self.c = controller
        self.store = controller.store
        self.settings = settings
        self.clock = clock
        self.running: dict[str, asyncio.Task[None]] = {}
        self._swept = 0  # the fencing token answers were last swept under

    async def loop(self) -> None:
        if not self.settings.acme_directory:
            return  # certificates by hand only
        log.info("ACME: certificates for custom domains from %s", self.settings.acme_directory)
        async with asyncio.TaskGroup() as tg:
            while True:
                if self.c.is_leader:
                    try:
                        await self.tick(tg)
                    except Exception:
                        log.exception("ACME pass failed")
                await asyncio.sleep(TICK_S)

    async def tick(self, tg: asyncio.TaskGroup) -> None:
        now = self.clock()
        domains = {d.hostname: d.app_id for d in await self.store.domains()}
        certified = [r.hostname for r in await self.store.certificates()]
        orders = await self.store.acme_orders()
        p = acme_plan.plan(now, domains, orders, certified, self.running)
        # Gone first: a domain that moved to another app has its row in both.
        if p.gone:
            await self.store.acme_drop_orders(list(p.gone))
        if p.new:
            await self.store.acme_save_orders(list(p.new))
        if self._swept != self.c.fence and not self.running:
            # Once per lease, with no order of ours in flight: whatever is
            # published is what a holder that died mid-order left.
            await self.store.acme_withdraw([], older_than=now)
            self._swept = self.c.fence
        for o in p.start:
            if len(self.running) >= PARALLEL:
                break
            self.running[o.hostname] = tg.create_task(self._order(o))

    async def _order(self, o: Order) -> None:
        try:
            await self._order_once(o)
        except Exception as exc:
            # Never out of the task group: that would stop the controller.
            log.exception("ACME: the order for %s broke", o.hostname)
            with contextlib.suppress(Exception):  # and not again at once: backed off
                after = acme_plan.failed(
                    o, self.clock(), "error", repr(exc), self.settings.acme_retry_s
                )
                await self.store.acme_save_orders([after])
        finally:
            # Only now: until its row says when next, the plan would start it again.
            self.running.pop(o.hostname, None)

    async def _order_once(self, o: Order) -> None:
        s = self.settings
        fence = self.c.fence
        try:
            chain, key_pem = await self._issue(o)
            not_before, not_after = validity(chain)
            check_certificate(chain, key_pem, o.hostname)
        except (AcmeFailure, CertificateError, ValueError) as exc:
            reason, detail = (
                (exc.reason, exc.detail) if isinstance(exc, AcmeFailure) else ("ca", str(exc))
            )
            after = acme_plan.failed(o, self.clock(), reason, detail, s.acme_retry_s)
            log.warning(
                "ACME: no certificate for %s (%s: %s); retry in %.0f s",
                o.hostname, reason, detail, after.next_at - self.clock(),
            )  # fmt: skip
            if self.c.fence == fence and await self._still_managed(o):
                await self.store.acme_save_orders([after])
                await self.store.add_event(
                    "cert-failing", f"{o.hostname}: {reason}: {detail}", o.app_id
                )
                await self.store.notify_event(
                    "cert-failing", o.app_id, f"{o.hostname}: {reason}: {detail}",
                    domain=o.hostname, reason=reason, retry_at=after.next_at,
                )  # fmt: skip
            return
        if self.c.fence != fence:
            return  # deposed meanwhile: the new holder decides
        still = {d.hostname for d in await self.store.domains(o.app_id)}
        if o.hostname not in still:
            return  # removed while ordering: its row goes at the next tick
        if not await self._still_managed(o):
            return  # its owner uploaded a certificate meanwhile: theirs stays
        await self.store.put_certificate(o.app_id, o.hostname, chain, key_pem, not_after)
        renew_before = s.acme_renew_days * acme_plan.DAY
        after = acme_plan.succeeded(o, self.clock(), not_before, not_after, renew_before)
        await self.store.acme_save_orders([after])
        await self.store.add_event(
            "cert-issued",
            f"{o.hostname}: certificate valid until "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(not_after))}",
            o.app_id,
        )
        await self.store.notify_event(
            "cert-issued", o.app_id, f"{o.hostname}: certificate issued",
            domain=o.hostname, not_after=not_after,
        )  # fmt: skip
        self.c.wake.set()  # routers get it with the next table
        log.info("ACME: certificate for %s installed", o.hostname)

    async def _still_managed(self, o: Order) -> bool:
        """Its row is still there: no upload by its owner (nor removal) meanwhile."""
        return o.hostname in {r.hostname for r in await self.store.acme_orders(o.app_id)}

    async def _issue(self, o: Order) -> tuple[str, str]:
        """(chain PEM, key PEM) for the domain, or AcmeFailure."""
        # Loaded when a certificate is first due, not at every start (issue 21).
        from roost.controller.acme_client import AcmeSession, new_key_pem

        s = self.settings
        account = await self.store.acme_account_key(s.acme_directory, new_key_pem())
        session = await asyncio.to_thread(
            AcmeSession, s.acme_directory, account, s.acme_email, s.acme_ca_bundle
        )
        try:
            pending = await asyncio.to_thread(session.begin, o.hostname)
            tokens = list(pending.answers)
            try:
                if tokens:
                    await self.store.acme_publish(
                        [Challenge(t, o.hostname, o.app_id, a) for t, a in pending.answers.items()]
                    )
                    self.c.wake.set()  # publish the route now, not at the next tick
                    await self._until_served(o.hostname, pending.answers)
                chain = await asyncio.to_thread(session.finish, pending)
            finally:
                if tokens:
                    await self.store.acme_withdraw(tokens)
                    self.c.wake.set()
        finally:
            await asyncio.to_thread(session.close)
        return chain, pending.key_pem

    async def _until_served(self, hostname: str, answers: dict[str, str]) -> None:
        """Until every router serves every answer, as the CA will ask for it.

        Each on PROBES fresh connections in a row: a router's workers share
        its port (SO_REUSEPORT), each with its own copy of the table, and a
        new connection may land on any of them, as the CA's will.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PUBLISH_TIMEOUT_S
        waiting = [(addr, t) for addr in router_addresses(self.settings) for t in answers]
        last = ""
        ok = 0
        async with httpx.AsyncClient(timeout=5.0) as client:
            while waiting:
                addr, token = waiting[0]
                url = f"http://{addr}/.well-known/acme-challenge/{token}"
                try:
                    r = await client.get(url, headers={"Host": hostname, "Connection": "close"})
                    if r.status_code == 200 and r.text == answers[token]:
                        ok += 1
                        if ok >= PROBES:
                            waiting.pop(0)
                            ok = 0
                        continue
                    ok = 0
                    last = f"HTTP {r.status_code}"
                except httpx.HTTPError as exc:
                    ok = 0
                    last = f"{type(exc).__name__}: {exc}"
                if loop.time() > deadline:
                    raise AcmeFailure(
                        "routers",
                        f"the router at {addr} did not serve the answer for {hostname} "
                        f"within {PUBLISH_TIMEOUT_S:.0f} s (last: {last})",
                    )
                await asyncio.sleep(PROBE_INTERVAL_S)
