"""TLS termination: a certificate per domain chosen by SNI, and a self-signed default.

Theory of operation: the listening socket has one `SSLContext` (the default
certificate) with an SNI callback. Certificates arrive inside the route table
(`AppRoute.certificates`, pushed by the controllers); on every table swap the
store rebuilds its hostname -> context map, reusing contexts for certificates
it has already loaded (keyed by the PEM's hash), so churn costs nothing. The
callback only reads that map, so a handshake never waits for anything.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import ssl
import tempfile
from pathlib import Path

from roost.router.table import RouteTable, normalize_host
from roost.wire.messages import TlsCertificate

log = logging.getLogger("roost.router.tls")


def default_certificate(directory: Path, default_domain: str) -> tuple[Path, Path]:
    """The router's default certificate files, generated on first use.

    Workers start together and share the directory: one generates under a
    lock while the others wait, and each file appears whole (written aside,
    then renamed), so no worker ever loads one worker's key with another's
    certificate.
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    cert, key = directory / "default.crt", directory / "default.key"
    lock = os.open(directory / "default.lock", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (cert.exists() and key.exists()):
            # cryptography (~3 MB resident) only for the first start's certificate (issue 21).
            from roost.selfsigned import generate_self_signed

            names = [f"*.{default_domain}", default_domain, "localhost", "127.0.0.1"]
            cert_pem, key_pem = generate_self_signed(list(dict.fromkeys(names)))
            for path, data in ((key, key_pem), (cert, cert_pem)):
                tmp = path.with_name(path.name + ".tmp")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                os.replace(tmp, path)
            log.info("generated a self-signed default certificate in %s", directory)
    finally:
        os.close(lock)  # (releases the lock)
    return cert, key


def _context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_alpn_protocols(["http/1.1"])
    ctx.load_cert_chain(cert_path, key_path)
    return ctx


class CertStore:
    def __init__(self, directory: Path, default_domain: str) -> None:
        self.directory = directory
        cert, key = default_certificate(directory, default_domain)
        self.server_context = _context(cert, key)
        self.server_context.sni_callback = self._sni
        self._by_pem: dict[str, ssl.SSLContext] = {}
        self._exact: dict[str, ssl.SSLContext] = {}
        self._wild: dict[str, ssl.SSLContext] = {}

    def _load(self, c: TlsCertificate) -> ssl.SSLContext | None:
        digest = hashlib.sha256((c.cert_pem + "\0" + c.key_pem).encode()).hexdigest()
        ctx = self._by_pem.get(digest)
        if ctx is not None:
            return ctx
        # ssl loads chains from files only: write them privately, load, delete.
        with tempfile.TemporaryDirectory(dir=self.directory) as tmp:
            cert_path, key_path = Path(tmp) / "c.pem", Path(tmp) / "k.pem"
            cert_path.write_text(c.cert_pem)
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(c.key_pem)
            try:
                ctx = _context(cert_path, key_path)
            except (ssl.SSLError, ValueError, OSError) as exc:
                log.error("refused a certificate for %s: %s", ", ".join(c.hostnames), exc)
                return None
        self._by_pem[digest] = ctx
        return ctx

    def update(self, table: RouteTable) -> None:
        exact: dict[str, ssl.SSLContext] = {}
        wild: dict[str, ssl.SSLContext] = {}
        used: set[int] = set()
        for entry in table.apps.values():
            for c in entry.route.certificates:
                ctx = self._load(c)
                if ctx is None:
                    continue
                used.add(id(ctx))
                for h in c.hostnames:
                    h = normalize_host(h)
                    if h.startswith("*."):
                        wild.setdefault(h[1:], ctx)
                    elif h:
                        exact.setdefault(h, ctx)
        self._exact, self._wild = exact, wild
        self._by_pem = {k: v for k, v in self._by_pem.items() if id(v) in used}

    def context_for(self, server_name: str | None) -> ssl.SSLContext | None:
        if not server_name:
            return None
        host = server_name.lower().rstrip(".")
        ctx = self._exact.get(host)
        if ctx is None and "." in host:
            ctx = self._wild.get(host[host.index(".") :])
        return ctx

    def _sni(self, sslobj: ssl.SSLObject, server_name: str | None, initial: ssl.SSLContext) -> None:
        ctx = self.context_for(server_name)
        if ctx is not None:
            sslobj.context = ctx
        return None
