"""Real receivers for the log drain tests: a test CA, a private rsyslogd
(imtcp, plain and TLS through GnuTLS) and an HTTPS endpoint in the test."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import shutil
import socket
import ssl
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import free_port, wait_until


@dataclass(frozen=True)
class DrainCA:
    ca: Path  # the CA's certificate (what a client trusts)
    cert: Path  # the server's, for localhost and 127.0.0.1, signed by the CA
    key: Path


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def make_ca(where: Path) -> DrainCA:
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "roost test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.OID_SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    where.mkdir(parents=True, exist_ok=True)
    out = DrainCA(where / "ca.pem", where / "cert.pem", where / "key.pem")
    out.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    out.cert.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    out.key.write_bytes(_pem_key(key))
    return out


# ------------------------------------------------------------ rsyslog

RSYSLOG_CONF = """
global(workDirectory="{work}"
       defaultNetstreamDriverCAFile="{ca}"
       defaultNetstreamDriverCertFile="{cert}"
       defaultNetstreamDriverKeyFile="{key}")
module(load="imtcp")
template(name="fields" type="string"
         string="%hostname%|%app-name%|%procid%|%msgid%|%pri%|%msg%\\n")
ruleset(name="drains") {{
  action(type="omfile" file="{out}" template="fields" flushOnTXEnd="on" asyncWriting="off")
}}
input(type="imtcp" address="127.0.0.1" port="{tcp}" ruleset="drains")
input(type="imtcp" address="127.0.0.1" port="{tls}" ruleset="drains"
      streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="anon")
"""


@dataclass
class Rsyslog:
    tcp: int
    tls: int
    out: Path

    def records(self) -> list[list[str]]:
        """What it received: hostname, app-name, procid, msgid, pri, msg per message."""
        if not self.out.exists():
            return []
        text = self.out.read_text("utf-8", "replace")
        return [ln.split("|", 5) for ln in text.splitlines() if ln]


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@contextmanager
def rsyslogd(base: Path, ca: DrainCA) -> Iterator[Rsyslog]:
    """A private rsyslogd on loopback, plain TCP and TLS; stopped afterwards."""
    binary = shutil.which("rsyslogd") or "/usr/sbin/rsyslogd"
    work = base / "work"
    work.mkdir(parents=True)
    r = Rsyslog(free_port(), free_port(), base / "received.log")
    conf = base / "rsyslog.conf"
    conf.write_text(
        RSYSLOG_CONF.format(
            work=work, ca=ca.ca, cert=ca.cert, key=ca.key, out=r.out, tcp=r.tcp, tls=r.tls
        )
    )
    check = subprocess.run([binary, "-N1", "-f", str(conf)], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr + check.stdout
    err = (base / "rsyslogd.err").open("wb")
    proc = subprocess.Popen(
        [binary, "-n", "-iNONE", "-f", str(conf)], stdout=err, stderr=subprocess.STDOUT
    )
    try:
        wait_until(
            lambda: proc.poll() is None and _accepts(r.tcp) and _accepts(r.tls),
            30,
            "rsyslogd to listen",
        )
        yield r
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        err.close()


# ------------------------------------------------------------ HTTPS


@dataclass
class HttpsReceiver:
    """An HTTPS endpoint answering each POST with the next of `statuses`
    (then 200), keeping every request's headers and body."""

    port: int = 0
    statuses: list[int] = field(default_factory=list)
    requests: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    got: asyncio.Event = field(default_factory=asyncio.Event)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                target = lines[0].split(" ")[1]
                headers = {}
                for ln in lines[1:]:
                    if ":" in ln:
                        k, v = ln.split(":", 1)
                        headers[k.strip().lower()] = v.strip()
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                self.requests.append((target, headers, body))
                status = self.statuses.pop(0) if self.statuses else 200
                writer.write(b"HTTP/1.1 %d X\r\nContent-Length: 0\r\n\r\n" % status)
                await writer.drain()
                self.got.set()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()


async def https_receiver(ca: DrainCA, receiver: HttpsReceiver) -> asyncio.Server:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(ca.cert, ca.key)
    server = await asyncio.start_server(receiver._serve, "127.0.0.1", 0, ssl=ctx)
    receiver.port = server.sockets[0].getsockname()[1]
    return server


def split_frames(body: bytes) -> list[bytes]:
    """The messages of an octet-counted stream or batch."""
    out, rest = [], body
    while rest:
        size, _, rest = rest.partition(b" ")
        out.append(rest[: int(size)])
        rest = rest[int(size) :]
    return out
