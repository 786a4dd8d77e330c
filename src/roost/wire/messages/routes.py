"""Controller -> routers: the routing table, and the routers' stats.

Part of `roost.wire.messages`, which every role imports them from.
"""

from __future__ import annotations

import msgspec

from roost.wire.messages.base import Msg

# ---------------------------------------------------------------- routes


class Backend(msgspec.Struct, frozen=True, kw_only=True):
    instance_id: str
    host: str
    port: int
    unix_socket: str = ""
    host_id: str = ""


class StaticRoute(msgspec.Struct, frozen=True, kw_only=True):
    url_prefix: str
    # Path inside the app's static bundle (AppRoute.static_bundle), which the
    # router fetches by digest from the image store and unpacks locally.
    path: str
    is_file: bool = False
    directory_indexes: bool = False


class AppRoute(msgspec.Struct, frozen=True, kw_only=True):
    app: str
    hostnames: list[str]
    backends: list[Backend] = []
    release: int = 0
    suspended: bool = False
    static: list[StaticRoute] = []
    static_bundle: str = ""  # digest of the static bundle, "" when none
    gzip: bool = False
    expires: dict[str, int] = {}
    basic_auth: dict[str, str] = {}
    basic_auth_realm: str = ""
    # TLS certificates for this app's custom domains (the router terminates TLS).
    certificates: list[TlsCertificate] = []
    # Pending ACME HTTP-01 answers for its domains: token -> key authorization,
    # served at /.well-known/acme-challenge/TOKEN before anything else.
    acme_challenges: dict[str, str] = {}


class RouteSnapshot(Msg, frozen=True, kw_only=True):
    version: int
    routes: list[AppRoute]
    fence: int = 0


class RouteDelta(Msg, frozen=True, kw_only=True):
    """Changes from `base_version` to `version`; applies only on top of base."""

    base_version: int
    version: int
    upserts: list[AppRoute] = []
    removals: list[str] = []
    fence: int = 0


class RouteSnapshotRequest(Msg, frozen=True, kw_only=True):
    pass


class RouterStats(Msg, frozen=True, kw_only=True):
    """A router worker's request counters since it started, sent to every
    controller every few seconds for the dashboard's charts. Cumulative, so
    a lost report loses nothing: the next one carries it."""

    source: str  # router name and worker index: whose counters these are
    started: float  # the worker's start (wall clock): a new one restarts from 0
    # app -> requests answered by status class: [1xx, 2xx, 3xx, 4xx, 5xx]
    requests: dict[str, list[int]] = {}
    # app -> requests per latency bucket (roost.router.stats.BUCKETS), not cumulative
    latency: dict[str, list[int]] = {}


class TlsCertificate(msgspec.Struct, frozen=True, kw_only=True):
    """A certificate chain and its private key (PEM) for some hostnames.

    Routers pick it by SNI for any hostname listed (exact, or `*.example.com`);
    hostnames without one get the router's default (self-signed) certificate.
    """

    hostnames: list[str]
    cert_pem: str
    key_pem: str
