"""Real receivers for alerts: an HTTP server recording webhook POSTs, and an
SMTP server (aiosmtpd) keeping the mail; each started and stopped by its test."""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from aiosmtpd.controller import Controller as SmtpController
from aiosmtpd.smtp import SMTP, Envelope, Session

from tests.conftest import free_port


@dataclass
class Receiver:
    url: str
    status: int = 200  # what it answers
    got: list[tuple[dict[str, str], bytes]] = field(default_factory=list)

    def signed(self, secret: str) -> bool:
        """Every POST carries the HMAC-SHA256 of its body under `secret`."""
        return all(
            hmac.compare_digest(
                h.get("X-Hub-Signature-256", ""),
                "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),
            )
            for h, body in self.got
        )


@contextmanager
def receiving() -> Iterator[Receiver]:
    """A real HTTP server on loopback that records what it is sent."""
    rec = Receiver(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            rec.got.append((dict(self.headers.items()), body))
            self.send_response(rec.status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"no")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    rec.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield rec
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


class Mailbox:
    def __init__(self, port: int) -> None:
        self.port = port
        self.mail: list[tuple[list[str], Message]] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        assert isinstance(envelope.content, bytes)
        self.mail.append((list(envelope.rcpt_tos), message_from_bytes(envelope.content)))
        return "250 OK"


@contextmanager
def mailbox() -> Iterator[Mailbox]:
    """A real SMTP server on loopback (aiosmtpd) keeping what it is sent."""
    box = Mailbox(free_port())
    server = SmtpController(box, hostname="127.0.0.1", port=box.port)
    server.start()
    try:
        yield box
    finally:
        server.stop()
