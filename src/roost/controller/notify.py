"""Alerts: what they are, where they may go, when to try again. Pure.

Theory of operation. Code that sees something an operator must hear of (a
deploy starting or failing, a host going down, a backup failing, a
certificate failing to renew...) calls `store.notify_event(kind, app,
message, **fields)` (store_notify.py), one of the `KINDS` below. That call
stores the alert and one *delivery* per target listening (the app's own
targets and the platform-wide ones) in one transaction, before anyone tries
to send it: a controller that dies then loses nothing, the next lease holder
sends it. Any replica may raise an alert; only the scheduler lease holder
sends them (notifier.py), so each goes out once in the common case and at
least once across a failover: receivers deduplicate by the delivery id,
sent in a header as GitHub's X-GitHub-Delivery.

Targets (`roost notify add URL`): a webhook (http:// or https://, a JSON
POST, signed with HMAC-SHA256 of the body under the target's secret in
X-Hub-Signature-256 as GitHub signs its webhooks), or e-mail: `mailto:`
addresses are sent through the platform's SMTP server (ROOST_SMTP_URL),
`smtp://[user:pass@]host[:port]/to@a,to@b[?from=..&starttls=1]` (or
smtps://) through a server of the target's own. A malformed URL is refused
when added; one that cannot be reached is accepted and its deliveries show
failing. A failed try is retried after `backoff` (exponential, capped, with
jitter) until MAX_ATTEMPTS, then the delivery is `failed` for good.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit, urlunsplit

# Every alert kind, with what raises it.
KINDS: dict[str, str] = {
    "deploy-started": "a deploy began building (controller/service.py)",
    "deploy-succeeded": "a deploy's release went live (controller/rolloutend.py)",
    "deploy-failed": "a deploy failed: build, provisioning, release phase or rollout",
    "deploy-rolled-back": "a live release crash-looped and was rolled back (autorollback.py)",
    "instance-crash-loop": "an instance keeps crashing (runner heartbeats, notifywatch.py)",
    "instance-oom": "an instance was killed for running out of memory (notifywatch.py)",
    "host-down": "a runner host went silent (controller/core.py)",
    "host-up": "a host that was down is heard again (controller/hostsheard.py)",
    "cert-issued": "a certificate was issued or renewed (ACME)",
    "cert-failing": "a certificate could not be issued or renewed (ACME)",
    "backup-failed": "a backup failed or could not be copied offsite (backupd)",
    "drill-failed": "a restore drill of a backup failed (backupd)",
    "disk-nearly-full": "a servicehost's disk is nearly full (notifywatch.py)",
}

MAX_ATTEMPTS = 10
BACKOFF_CAP_S = 3600.0
SIGNATURE_HEADER = "X-Hub-Signature-256"
_EMAIL = re.compile(r"^[^@\s,<>]+@[^@\s,<>]+\.[^@\s,<>]+$")


class BadTarget(ValueError):
    """A notification URL refused when added."""


@dataclass(frozen=True)
class Target:
    kind: Literal["webhook", "email"]
    url: str
    to: tuple[str, ...] = ()  # e-mail recipients
    # E-mail through the target's own server (smtp://); None: the platform's.
    server: SmtpServer | None = None
    sender: str = ""  # ?from= of an smtp:// target


@dataclass(frozen=True)
class SmtpServer:
    host: str
    port: int
    tls: bool = False  # implicit TLS (smtps://)
    starttls: bool = False
    user: str = ""
    password: str = field(default="", repr=False)


def _addresses(text: str, url: str) -> tuple[str, ...]:
    to = tuple(a.strip() for a in unquote(text).split(",") if a.strip())
    if not to:
        raise BadTarget(f"{redact(url)}: no recipient address")
    for a in to:
        if not _EMAIL.match(a):
            raise BadTarget(f"{redact(url)}: {a!r} is not an e-mail address")
    return to


def smtp_server(url: str) -> tuple[SmtpServer, dict[str, list[str]], str]:
    """An smtp:// or smtps:// URL: the server, its query, its path (recipients)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise BadTarget(f"{redact(url)}: {exc}") from None
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise BadTarget(f"{redact(url)}: an SMTP URL is smtp://[user:pass@]host[:port]/...")
    query = parse_qs(parts.query)
    tls = parts.scheme == "smtps"
    server = SmtpServer(
        host=parts.hostname,
        port=port or (465 if tls else 25),
        tls=tls,
        starttls=query.get("starttls", ["0"])[0] in ("1", "true", "yes"),
        user=unquote(parts.username or ""),
        password=unquote(parts.password or ""),
    )
    return server, query, parts.path.lstrip("/")


def parse_target(url: str) -> Target:
    """A notification URL as given to `roost notify add`; BadTarget when malformed."""
    url = url.strip()
    if not url or any(ch.isspace() for ch in url):
        raise BadTarget(f"{url!r}: a URL has no spaces")
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme in ("http", "https"):
        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 (raises on a bad port)
        except ValueError as exc:
            raise BadTarget(f"{url}: {exc}") from None
        if not parts.hostname:
            raise BadTarget(f"{url}: a webhook URL names a host")
        return Target("webhook", url)
    if scheme == "mailto":
        return Target("email", url, _addresses(url.split(":", 1)[1].split("?", 1)[0], url))
    if scheme in ("smtp", "smtps"):
        server, query, path = smtp_server(url)
        sender = query.get("from", [""])[0]
        if sender and not _EMAIL.match(sender):
            raise BadTarget(f"{redact(url)}: from={sender!r} is not an e-mail address")
        return Target("email", url, _addresses(path, url), server, sender)
    raise BadTarget(
        f"{redact(url)}: a notification URL is http(s):// (a webhook), mailto: or smtp(s)://"
    )


def redact(url: str) -> str:
    """The URL with any password in it replaced by ***, to show and log."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if not password:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def target_host(target: Target) -> str:
    """The host a target's sender connects to ("" for mailto:, the platform's server)."""
    if target.kind == "webhook":
        return urlsplit(target.url).hostname or ""
    return target.server.host if target.server is not None else ""


def private_address(address: str) -> bool:
    """An address an app member's target may not reach: loopback, private,
    link-local (cloud metadata at 169.254.169.254), unspecified, reserved or
    multicast; anything that is not a global unicast address. The controller
    sits inside the platform's network: an app's webhook must not make it
    probe what is there."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False  # a name: its addresses are judged once resolved
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def refusal(host: str, addresses: list[str]) -> str:
    """Why an app member's target may not be sent to ("" when it may)."""
    bad = [a for a in [host, *addresses] if private_address(a)]
    if not bad:
        return ""
    return (
        f"refused: {host} is a private address ({bad[0]}); only an operator's "
        "targets may reach addresses inside the platform"
    )


# ------------------------------------------------------------------ retries


def backoff(attempts: int, base_s: float, jitter: float = 0.0) -> float:
    """Seconds to wait after the `attempts`-th failed try: base, 2x, 4x, ...
    up to BACKOFF_CAP_S; `jitter` in [0, 1) adds up to a quarter more, so
    targets that failed together are not all tried again at one instant."""
    delay = min(base_s * 2 ** max(0, attempts - 1), BACKOFF_CAP_S)
    return delay * (1 + jitter / 4)


@dataclass(frozen=True)
class Outcome:
    """A delivery after one try: its new state, tries so far, next try, error."""

    state: Literal["pending", "delivered", "failed"]
    attempts: int
    next_at: float
    last_error: str


def after_try(
    attempts: int, error: str, now: float, base_s: float, jitter: float = 0.0, final: bool = False
) -> Outcome:
    """The delivery's record after its try number `attempts + 1`, which
    failed with `error` ("" when it was delivered); `final`: no try could
    ever succeed (a refused address), so none follows."""
    tried = attempts + 1
    if not error:
        return Outcome("delivered", tried, now, "")
    if tried >= MAX_ATTEMPTS or final:
        return Outcome("failed", tried, now, error)
    return Outcome("pending", tried, now + backoff(tried, base_s, jitter), error)


# ------------------------------------------------------------------ what is sent


@dataclass(frozen=True)
class Alert:
    """One stored alert, as sent."""

    event_id: int
    kind: str
    app: str
    message: str
    ts: float
    fields: dict[str, Any]


def payload(alert: Alert, delivery_id: int) -> bytes:
    """The webhook's JSON body (the bytes that are signed)."""
    body = {
        "event": alert.kind,
        "app": alert.app or None,
        "message": alert.message,
        "ts": alert.ts,
        "event_id": alert.event_id,
        "delivery_id": delivery_id,
        "fields": alert.fields,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def signature(secret: str, body: bytes) -> str:
    """X-Hub-Signature-256's value: "sha256=" + HMAC-SHA256(secret, body), hex."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def headers(alert: Alert, delivery_id: int, body: bytes, secret: str) -> dict[str, str]:
    out = {
        "Content-Type": "application/json",
        "User-Agent": "Roost-Notify",
        "X-Roost-Event": alert.kind,
        "X-Roost-Delivery": str(delivery_id),
    }
    if secret:
        out[SIGNATURE_HEADER] = signature(secret, body)
    return out


def email(alert: Alert, sender: str, to: tuple[str, ...]) -> EmailMessage:
    """The alert as a plain-text e-mail."""
    msg = EmailMessage()
    where = f"{alert.app}: " if alert.app else ""
    msg["Subject"] = f"[roost] {alert.kind}: {where}{alert.message}"[:200]
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    lines = [alert.message, "", f"event: {alert.kind}"]
    if alert.app:
        lines.append(f"app: {alert.app}")
    lines += [f"{k}: {v}" for k, v in sorted(alert.fields.items())]
    msg.set_content("\n".join(lines) + "\n")
    return msg


def backup_kind(message: str) -> str:
    """backupd's failure report as an alert kind: a drill's (its message says
    "drill", jobs.py) or the backup's own."""
    return "drill-failed" if "drill" in message else "backup-failed"
