"""When to order, renew and retry certificates by ACME. Pure: no store, no I/O.

Theory of operation: a custom domain is *managed* (its certificate comes by
ACME) when it has an order row, or when it has no certificate at all and is
not a wildcard (HTTP-01 cannot prove a wildcard; those stay uploaded by
hand). A domain with an uploaded certificate and no row is the user's: it is
never replaced behind their back.

Every managed domain carries one time, `next_at`: the next moment to order.
A new domain is due at once. A success sets it to the renewal point: 30 days
before expiry, or a third of the lifetime before it for a certificate that
lives less than 90 days (short-lived certificates would otherwise be renewed
forever). A failure sets it after a backoff that doubles with each failure
in a row, capped, so a domain whose DNS points elsewhere costs the CA a
handful of validations a day, not one a minute (Let's Encrypt allows five
failed validations per hostname an hour).

The state users see is one of pending (never issued yet, or ordering),
valid (a certificate is installed and renewal is not failing) and failing,
with the reason of the last failure in a word (`REASONS`) and its detail.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

DAY = 86400.0
RENEW_BEFORE_S = 30 * DAY
RETRY_FIRST_S = 600.0
RETRY_MAX_S = DAY

PENDING, VALID, FAILING = "pending", "valid", "failing"
STATES = (PENDING, VALID, FAILING)

# Why an order failed, in a word; the detail says the rest.
REASONS = (
    "dns",  # the CA could not resolve the domain (no A/AAAA record, SERVFAIL)
    "timeout",  # the CA's connection or request to the domain timed out
    "refused",  # nothing listens where the domain points (connection refused)
    "connection",  # another network failure on the CA's way to the domain
    "unauthorized",  # something answered, but not with the challenge's answer
    "rejected",  # the CA refuses the name (policy, CAA, blocklist)
    "rate-limited",  # the CA asks us to come back later
    "routers",  # our own routers did not serve the answer before asking the CA
    "ca",  # the CA itself is unreachable or answered an error
    "error",  # anything else
)


class AcmeFailure(Exception):
    """Why an order failed: a reason word of REASONS and the CA's detail.
    Here, not beside the client, so catching it does not load the `acme`
    library (~6 MB resident, issue 21) before a certificate is due."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class Order:
    """A managed domain's row (table acme_orders)."""

    hostname: str
    app_id: int
    state: str
    next_at: float
    reason: str = ""
    detail: str = ""
    failures: int = 0


@dataclass(frozen=True)
class Plan:
    start: tuple[Order, ...]  # due now: order (or renew) these
    new: tuple[Order, ...]  # rows to create for newly managed domains (all due now)
    gone: tuple[str, ...]  # rows whose domain was removed: delete them


def renew_at(not_before: float, not_after: float, renew_before: float = RENEW_BEFORE_S) -> float:
    """When to renew a certificate valid from `not_before` to `not_after`."""
    lifetime = max(0.0, not_after - not_before)
    return not_after - min(renew_before, lifetime / 3)


def backoff(failures: int, first: float = RETRY_FIRST_S, cap: float = RETRY_MAX_S) -> float:
    """Seconds to wait after the `failures`-th failure in a row (1, 2, ...)."""
    if failures <= 0:
        return 0.0
    return min(cap, first * 2 ** min(failures - 1, 40))


def managed(hostname: str, has_certificate: bool, has_order: bool) -> bool:
    if has_order:
        return True
    return not has_certificate and not hostname.startswith("*.")


def plan(
    now: float,
    domains: Mapping[str, int],
    orders: Iterable[Order],
    certified: Iterable[str],
    running: Iterable[str] = (),
) -> Plan:
    """What to do now. `domains`: hostname -> app id; `certified`: hostnames
    with a certificate installed; `running`: orders in flight (one per
    domain at a time: never started twice)."""
    by_host = {o.hostname: o for o in orders}
    certs = set(certified)
    busy = set(running)
    start: list[Order] = []
    new: list[Order] = []
    for host, app_id in sorted(domains.items()):
        o = by_host.get(host)
        if o is not None and o.app_id != app_id:
            o = None  # the domain moved to another app: its old row goes, a new one starts
        if o is None:
            if not managed(host, host in certs, False):
                continue
            o = Order(hostname=host, app_id=app_id, state=PENDING, next_at=now)
            new.append(o)
        if host not in busy and o.next_at <= now:
            start.append(o)
    gone = sorted(h for h, o in by_host.items() if h not in domains or domains[h] != o.app_id)
    return Plan(start=tuple(start), new=tuple(new), gone=tuple(gone))


def succeeded(
    o: Order, now: float, not_before: float, not_after: float, renew_before: float = RENEW_BEFORE_S
) -> Order:
    """The row after a certificate valid from `not_before` to `not_after` was installed."""
    return replace(
        o,
        state=VALID,
        reason="",
        detail="",
        failures=0,
        next_at=max(now, renew_at(not_before, not_after, renew_before)),
    )


def failed(
    o: Order,
    now: float,
    reason: str,
    detail: str,
    first: float = RETRY_FIRST_S,
    cap: float = RETRY_MAX_S,
) -> Order:
    """The row after an order failed for `reason`: failing, retried after a backoff."""
    failures = o.failures + 1
    return replace(
        o,
        state=FAILING,
        reason=reason if reason in REASONS else "error",
        detail=detail[:2000],
        failures=failures,
        next_at=now + backoff(failures, first, cap),
    )


def forced(o: Order, now: float) -> Order:
    """The row when an operator asks for a renewal now (`roost certs renew`)."""
    return replace(o, next_at=now)


def classify(problem_type: str, detail: str) -> str:
    """A reason word for an ACME problem (RFC 8555 section 6.7) and its detail.

    CAs say "connection" for both a refused and a timed-out connection (and
    Pebble, Boulder and others word the detail differently), so the detail
    decides between them.
    """
    kind = problem_type.rsplit(":", 1)[-1]
    text = detail.lower()
    if kind == "dns" or any(
        w in text for w in ("no such host", "could not resolve", "servfail", "nxdomain")
    ):
        return "dns"
    if kind in ("rejectedIdentifier", "caa", "unsupportedIdentifier"):
        return "rejected"
    if kind == "rateLimited":
        return "rate-limited"
    if "refused" in text:
        return "refused"
    if "timeout" in text or "timed out" in text or "deadline exceeded" in text:
        return "timeout"
    if kind in ("connection", "tls"):
        return "connection"
    if kind in ("unauthorized", "incorrectResponse"):
        return "unauthorized"
    return "error"
