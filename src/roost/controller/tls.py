"""Checking a certificate and key a user uploads before routers get them, and
keeping the private key sealed while it is stored.

The private key is stored sealed with the same secrets key as service
credentials (`secretbox`), marked by a prefix so that a row an older Roost
wrote in clear is told apart and sealed when it is next read
(`Store.certificates`). Routers get the opened key inside the route table,
over the CURVE-encrypted wire, and keep it in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from roost.controller.secretbox import SecretBox, SecretError

SEALED = "sealed:"


class CertificateError(Exception):
    pass


def is_sealed(stored: str) -> bool:
    return stored.startswith(SEALED)


def seal_key(box: SecretBox, key_pem: str) -> str:
    """The stored form of a private key."""
    return SEALED + box.seal(key_pem)


def open_key(box: SecretBox | None, stored: str) -> str:
    """The private key in PEM from its stored form (sealed, or clear from an older Roost)."""
    if not is_sealed(stored):
        return stored
    if box is None:
        raise SecretError("a sealed private key needs the secrets key to be opened")
    key = box.open(stored[len(SEALED) :])
    if not isinstance(key, str):
        raise SecretError("a stored private key opened to something that is not PEM text")
    return key


@dataclass(frozen=True)
class CertInfo:
    subject: str
    names: list[str]
    not_after: float


def _matches(host: str, name: str) -> bool:
    if name.startswith("*."):
        return host.endswith(name[1:]) and host.count(".") == name.count(".")
    return host == name


def check_certificate(cert_pem: str, key_pem: str, hostname: str) -> CertInfo:
    """Parse both, check the key belongs to the certificate and the name is covered."""
    try:
        certs = x509.load_pem_x509_certificates(cert_pem.encode())
    except ValueError as exc:
        raise CertificateError(f"the certificate is not valid PEM: {exc}") from None
    try:
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise CertificateError(
            f"the private key is not a valid unencrypted PEM key: {exc}"
        ) from None
    leaf = certs[0]
    pub = leaf.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    mine = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if pub != mine:
        raise CertificateError("the private key does not belong to the certificate")
    names: list[str] = []
    try:
        san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        names = [str(n) for n in san.value.get_values_for_type(x509.DNSName)]
    except x509.ExtensionNotFound:
        cn = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        names = [str(cn[0].value)] if cn else []
    if not any(_matches(hostname, n.lower()) for n in names):
        raise CertificateError(
            f"the certificate does not cover {hostname} (it names {', '.join(names) or 'nothing'})"
        )
    return CertInfo(
        subject=leaf.subject.rfc4514_string(),
        names=names,
        not_after=leaf.not_valid_after_utc.timestamp(),
    )
