"""Talking to an ACME CA (RFC 8555) with certbot's `acme` library: blocking.

A thin adapter: `AcmeSession` is made per order and every method blocks on
the network (the `acme` library uses requests), so the runner (acme.py) calls
each on a thread, never on the event loop. An order goes in two halves with
the publication of the HTTP-01 answers between them, which is the runner's
business (the store and the routers):

    session = AcmeSession(directory, account_key_pem, email, ca_bundle)
    pending = session.begin(hostname)            # key, CSR, order, answers
    ... publish pending.answers, check the routers serve them ...
    chain = session.finish(pending)               # answer, poll, finalize

Every failure is an `AcmeFailure` with a reason word (acme_plan.REASONS)
and the CA's detail, so the runner records why without knowing the library.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import Any

import josepy as jose
import requests
from acme import challenges, client, crypto_util, errors, messages
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from roost import __version__
from roost.controller.acme_plan import AcmeFailure, classify

__all__ = ["AcmeFailure", "AcmeSession", "new_key_pem"]

NETWORK_TIMEOUT_S = 30
ORDER_TIMEOUT_S = 120.0


def new_key_pem() -> str:
    """A new private key in PEM (PKCS#8): ECDSA P-256, which every CA and client takes."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode("ascii")


@dataclass
class PendingOrder:
    hostname: str
    key_pem: str  # the certificate's private key
    order: Any  # messages.OrderResource
    # token -> key authorization: what /.well-known/acme-challenge/TOKEN answers
    answers: dict[str, str] = field(default_factory=dict)
    challenges: list[Any] = field(default_factory=list)  # messages.ChallengeBody


def _problem(err: Any) -> AcmeFailure:
    typ = str(getattr(err, "typ", "") or "")
    detail = str(getattr(err, "detail", "") or "") or str(err)
    return AcmeFailure(classify(typ, detail), detail)


def _failure(exc: BaseException) -> AcmeFailure:
    """Why an order failed, from whatever the library or the network raised."""
    if isinstance(exc, AcmeFailure):
        return exc
    if isinstance(exc, errors.ValidationError):
        for authzr in exc.failed_authzrs:
            for chall in authzr.body.challenges:
                if chall.error is not None:
                    return _problem(chall.error)
        return AcmeFailure("error", "the CA found a challenge invalid and gave no reason")
    if isinstance(exc, errors.IssuanceError):
        return _problem(exc.error)
    if isinstance(exc, messages.Error):
        reason = classify(exc.typ or "", exc.detail or "")
        # The CA's own refusals (badNonce, malformed...) are about the CA, not the domain.
        return AcmeFailure(reason if reason != "error" else "ca", exc.detail or str(exc))
    if isinstance(exc, errors.TimeoutError):
        return AcmeFailure("timeout", "the CA did not finish validating in time")
    if isinstance(exc, requests.RequestException):
        return AcmeFailure("ca", f"the CA is unreachable: {exc}")
    return AcmeFailure("error", f"{type(exc).__name__}: {exc}")


class AcmeSession:
    def __init__(
        self, directory: str, account_key_pem: str, email: str = "", ca_bundle: str = ""
    ) -> None:
        key = serialization.load_pem_private_key(account_key_pem.encode(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise AcmeFailure("error", "the ACME account key is not an ECDSA key")
        self.key = jose.JWKEC(key=key)
        self.email = email
        self.net = client.ClientNetwork(
            self.key, alg=jose.ES256, user_agent=f"roost/{__version__}", timeout=NETWORK_TIMEOUT_S
        )
        # requests takes a CA bundle's path where a bool goes (a private CA: Pebble's).
        self.net.verify_ssl = ca_bundle or True  # type: ignore[assignment]
        try:
            self.acme = client.ClientV2(
                client.ClientV2.get_directory(directory, self.net), self.net
            )
            self._account()
        except Exception as exc:
            self.close()
            raise _failure(exc) from exc

    def _account(self) -> None:
        """Register the key, or find its account (the CA answers 200 with its Location)."""
        reg = messages.NewRegistration.from_data(
            email=self.email or None, terms_of_service_agreed=True
        )
        try:
            self.acme.new_account(reg)
        except errors.ConflictError as exc:
            regr = messages.RegistrationResource(uri=exc.location, body=messages.Registration())
            self.net.account = regr
            self.acme.query_registration(regr)

    def close(self) -> None:
        self.net.session.close()

    def begin(self, hostname: str) -> PendingOrder:
        """A new key and order for `hostname`, and the HTTP-01 answers it needs."""
        try:
            key_pem = new_key_pem()
            csr = crypto_util.make_csr(key_pem.encode(), [hostname])
            order = self.acme.new_order(csr)
            pending = PendingOrder(hostname=hostname, key_pem=key_pem, order=order)
            for authzr in order.authorizations:
                if authzr.body.status == messages.STATUS_VALID:
                    continue  # the CA still trusts an earlier proof
                http01 = [
                    c for c in authzr.body.challenges if isinstance(c.chall, challenges.HTTP01)
                ]
                if not http01:
                    raise AcmeFailure(
                        "rejected", "the CA offers no HTTP-01 challenge for this name"
                    )
                chall = http01[0]
                token = chall.chall.encode("token")
                pending.answers[token] = chall.chall.validation(self.key)
                pending.challenges.append(chall)
            return pending
        except Exception as exc:
            raise _failure(exc) from exc

    def finish(self, pending: PendingOrder) -> str:
        """Tell the CA the answers are up, wait for its verdict, fetch the chain (PEM)."""
        deadline = datetime.datetime.now() + datetime.timedelta(seconds=ORDER_TIMEOUT_S)
        try:
            for chall in pending.challenges:
                self.acme.answer_challenge(chall, chall.chall.response(self.key))
            order = self.acme.poll_and_finalize(pending.order, deadline)
        except Exception as exc:
            raise _failure(exc) from exc
        chain = order.fullchain_pem
        if not chain:
            raise AcmeFailure("ca", "the CA finalized the order without a certificate")
        return str(chain)
