"""The API's TLS: off loopback the API and the dashboard are served over HTTPS.

Theory of operation. A controller whose API binds a loopback address serves
plain HTTP: nothing it says leaves the machine (`roost up`, a controller
reached through an SSH tunnel). Bound anywhere else, tokens and passwords
would cross the network in clear, so it serves HTTPS with, in order:

1. the certificate chain and key named by ROOST_API_TLS_CERT and
   ROOST_API_TLS_KEY (an operator's, e.g. from a public CA; also honoured
   on loopback);
2. else its own self-signed certificate, made at first start in
   DATA/controller/tls/ (api.pem, and api.key 0600 in a 0700 directory),
   naming the bind address, the host's names and addresses, loopback, and
   ROOST_API_TLS_NAMES. It is kept across restarts, so a client that trusts
   it keeps trusting it: the CLI is given the PEM file (ROOST_API_CA, or
   `roost login --ca`), and the controller logs its SHA-256 fingerprint.

Choosing is pure (`api_scheme`, `certificate_names`); files are made by
`api_certificate` only.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from roost.netaddr import is_loopback
from roost.privatefile import made_once, replace_private
from roost.settings import Settings

log = logging.getLogger("roost.controller.tls")

WILDCARDS = ("", "0.0.0.0", "::", "*")
CERT_FILE = "api.pem"
KEY_FILE = "api.key"


class ApiTlsError(Exception):
    """The configured certificate or key cannot be used (the message says why)."""


@dataclass(frozen=True)
class ApiTls:
    certfile: Path
    keyfile: Path
    fingerprint: str  # SHA-256 of the leaf certificate (DER), hex pairs
    # Made here: clients trust this very file (an operator's is trusted via its CA).
    self_signed: bool = False


def api_scheme(settings: Settings) -> str:
    """ "https" unless the API binds loopback and no certificate is configured."""
    if settings.api_tls_cert or not is_loopback(settings.bind_host):
        return "https"
    return "http"


def api_url(settings: Settings, host: str | None = None) -> str:
    """The API's base URL for clients on this machine (or at `host`)."""
    h = host or settings.bind_host
    if h in WILDCARDS:
        h = "127.0.0.1"
    if ":" in h and not h.startswith("["):
        h = f"[{h}]"
    return f"{api_scheme(settings)}://{h}:{settings.api_port}"


def certificate_names(bind_host: str, host_names: list[str], extra: list[str]) -> list[str]:
    """What a self-signed API certificate names: bind address first, no duplicates."""
    names = [] if bind_host in WILDCARDS else [bind_host]
    names += [*extra, *host_names, "localhost", "127.0.0.1", "::1"]
    out: list[str] = []
    for n in names:
        n = n.strip().strip("[]").lower()
        if n and n not in out:
            out.append(n)
    return out


def _this_host() -> list[str]:
    """This host's names and the addresses they resolve to (best effort)."""
    names = [socket.gethostname(), socket.getfqdn()]
    addresses: list[str] = []
    for name in names:
        try:
            for info in socket.getaddrinfo(name, None):
                addresses.append(str(info[4][0]))
        except OSError:
            continue
    return names + addresses


def fingerprint(cert_pem: bytes) -> str:
    # cryptography here and below, not at the top: `roost up` imports this
    # module for api_url, and on loopback (no TLS) never needs it (~1 MB).
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    leaf = x509.load_pem_x509_certificates(cert_pem)[0]
    digest = hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2)).upper()


def _check_pair(cert_pem: bytes, key_pem: bytes, where: str) -> str:
    """The leaf's fingerprint, once the key is known to belong to the certificate."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        leaf = x509.load_pem_x509_certificates(cert_pem)[0]
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise ApiTlsError(f"{where}: not a PEM certificate and unencrypted key: {exc}") from None
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if leaf.public_key().public_bytes(der, spki) != key.public_key().public_bytes(der, spki):
        raise ApiTlsError(f"{where}: the key does not belong to the certificate")
    return fingerprint(cert_pem)


def _write_private(path: Path, data: bytes) -> None:
    replace_private(path, data, fsync=True)


def self_signed_certificate(directory: Path, names: list[str]) -> ApiTls:
    """The certificate in `directory`, made for `names` when there is none yet.

    The key is written before the certificate, each whole (aside, then
    renamed): a start killed in between leaves no certificate, so the next
    start makes a new pair instead of pairing a certificate with another key.
    """
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(directory, 0o700)
    cert, key = directory / CERT_FILE, directory / KEY_FILE
    # Controllers sharing a fresh DATA (tests/cluster/test_cron_failover's)
    # start at once: unserialised, one's key could land beside the other's
    # certificate, and a controller with a mismatched pair exits.
    with made_once(directory):
        if not (cert.exists() and key.exists()):
            from roost.selfsigned import generate_self_signed

            cert_pem, key_pem = generate_self_signed(names, common_name=f"roost API {names[0]}")
            _write_private(key, key_pem)
            _write_private(cert, cert_pem)
            cert.chmod(0o644)  # public: clients copy it to trust it
            log.info("generated the API's self-signed certificate for %s", ", ".join(names))
    key.chmod(0o600)
    fp = _check_pair(cert.read_bytes(), key.read_bytes(), str(directory))
    return ApiTls(cert, key, fp, self_signed=True)


def api_certificate(data_dir: Path, settings: Settings) -> ApiTls | None:
    """The certificate the API serves with, or None for plain HTTP (loopback)."""
    if settings.api_tls_cert or settings.api_tls_key:
        if not (settings.api_tls_cert and settings.api_tls_key):
            raise ApiTlsError("ROOST_API_TLS_CERT and ROOST_API_TLS_KEY go together")
        cert, key = Path(settings.api_tls_cert), Path(settings.api_tls_key)
        try:
            cert_pem, key_pem = cert.read_bytes(), key.read_bytes()
        except OSError as exc:
            raise ApiTlsError(f"cannot read the API's certificate or key: {exc}") from None
        return ApiTls(cert, key, _check_pair(cert_pem, key_pem, f"{cert} / {key}"))
    if api_scheme(settings) == "http":
        return None
    extra = [n for n in settings.api_tls_names.split(",") if n.strip()]
    names = certificate_names(settings.bind_host, _this_host(), extra)
    return self_signed_certificate(data_dir / "controller" / "tls", names)
