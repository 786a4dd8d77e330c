"""Checking a certificate and key a user uploads before routers get them."""

from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID


class CertificateError(Exception):
    pass


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
