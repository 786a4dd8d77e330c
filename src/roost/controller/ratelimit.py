"""Limits on password guessing: sliding windows per key, and argon2 behind a semaphore.

A login costs an argon2id verification (64 MiB, tens of milliseconds of CPU):
unlimited, a few clients guess passwords forever and exhaust the controller's
memory and cores. Three limits, each answering 429 with Retry-After:

* every login or token request per client address (10 a minute);
* tries without a success per account (5 per 15 minutes), whatever the
  address: a botnet spreading its guesses over many addresses still gets 5
  per account (the price: a guesser can keep an account from logging in by
  password for 15 minutes; its tokens and SSH keys keep working);
* new tokens per account (10 a minute);
* argon2 runs in worker threads, at most `concurrency` at a time, with at
  most `max_waiting` requests queued for a turn (beyond that: 429 at once).

The windows are plain data over an injected clock, so tests drive them with a
fake one. Limits are per controller replica (kept in memory): with N replicas
an attacker gets N times the budget, which stays small.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

Clock = Callable[[], float]


class TooMany(Exception):
    """Refused for now; `retry_after` seconds until the next try is admitted."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    @property
    def retry_after_header(self) -> str:
        return str(max(1, math.ceil(self.retry_after)))


class SlidingWindow:
    """At most `limit` events per key in any `period_s` seconds.

    Each key keeps the times of its last `limit` events (memory: limit floats
    per key). Keys whose events all left the window are dropped when the
    table grows past `max_keys`, so spraying many addresses or account names
    costs the attacker requests, not the controller memory: past that, the
    keys with the oldest last event go first.
    """

    def __init__(
        self, limit: int, period_s: float, clock: Clock = time.monotonic, max_keys: int = 50_000
    ) -> None:
        if limit < 1 or period_s <= 0:
            raise ValueError("a window needs limit >= 1 and period_s > 0")
        self.limit = limit
        self.period_s = period_s
        self.clock = clock
        self.max_keys = max_keys
        self._events: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float] | None:
        events = self._events.get(key)
        if events is None:
            return None
        while events and events[0] <= now - self.period_s:
            events.popleft()
        if not events:
            del self._events[key]
            return None
        return events

    def retry_after(self, key: str) -> float:
        """Seconds until `key` may have one more event (0: now)."""
        now = self.clock()
        events = self._recent(key, now)
        if events is None or len(events) < self.limit:
            return 0.0
        return events[0] + self.period_s - now

    def record(self, key: str) -> None:
        now = self.clock()
        events = self._recent(key, now)
        if events is None:
            if len(self._events) >= self.max_keys:
                self._shrink(now)
            events = self._events[key] = deque(maxlen=self.limit)
        events.append(now)

    def reset(self, key: str) -> None:
        self._events.pop(key, None)

    def __len__(self) -> int:
        return len(self._events)

    def _shrink(self, now: float) -> None:
        for key in list(self._events):
            self._recent(key, now)
        excess = len(self._events) - self.max_keys + 1
        if excess > 0:
            by_age = sorted(self._events, key=lambda k: self._events[k][-1])
            for key in by_age[:excess]:
                del self._events[key]


class LoginGuard:
    """The limits every password check and token issue goes through."""

    def __init__(
        self,
        per_address: int = 10,
        per_address_s: float = 60.0,
        tries_per_account: int = 5,
        tries_s: float = 15 * 60.0,
        tokens_per_account: int = 10,
        tokens_s: float = 60.0,
        concurrency: int = 2,
        max_waiting: int = 32,
        clock: Clock = time.monotonic,
    ) -> None:
        self.addresses = SlidingWindow(per_address, per_address_s, clock)
        self.tries = SlidingWindow(tries_per_account, tries_s, clock)
        self.tokens = SlidingWindow(tokens_per_account, tokens_s, clock)
        self.max_waiting = max_waiting
        self._slots = asyncio.Semaphore(concurrency)
        self._waiting = 0

    @staticmethod
    def account_key(email: str) -> str:
        # Emails differing only in case or surrounding space name one account
        # to a guesser: count them together.
        return email.strip().lower()

    def admit_login(self, address: str, email: str) -> None:
        """Count one password try from `address` for `email`, or raise TooMany.

        A try counts against the account from the start, not once it has
        failed: guesses in flight together cannot slip past the limit. A
        successful login clears the account's count (`succeeded`).
        """
        self._admit_address(address)
        key = self.account_key(email)
        wait = self.tries.retry_after(key)
        if wait > 0:
            raise TooMany("too many failed logins for this account; retry later", wait)
        self.addresses.record(address)
        self.tries.record(key)

    def succeeded(self, email: str) -> None:
        self.tries.reset(self.account_key(email))

    def admit_token(self, address: str, account_id: int) -> None:
        """Count one token issued to a logged-in account, or raise TooMany."""
        self._admit_address(address)
        key = str(account_id)
        wait = self.tokens.retry_after(key)
        if wait > 0:
            raise TooMany("too many new tokens for this account; retry later", wait)
        self.addresses.record(address)
        self.tokens.record(key)

    def _admit_address(self, address: str) -> None:
        wait = self.addresses.retry_after(address)
        if wait > 0:
            raise TooMany("too many login attempts from this address; retry later", wait)

    async def hash_work(self, fn: Callable[..., T], *args: Any) -> T:
        """Run an argon2 hash or verification in a worker thread, a few at a time.

        Never on the event loop (it would stall every request for the hash's
        duration), never more than `concurrency` at once (each takes 64 MiB
        and a core), and a bounded queue: a flood is refused, not buffered.
        """
        if self._waiting >= self.max_waiting:
            raise TooMany("too many logins in progress; retry in a moment", 1.0)
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        # The slot is given back when the thread is done, not when the request
        # is: a client that hangs up mid-hash must not free a slot while its
        # hash still runs.
        work = asyncio.ensure_future(asyncio.to_thread(fn, *args))
        work.add_done_callback(lambda _: self._slots.release())
        return await asyncio.shield(work)
