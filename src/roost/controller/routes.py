"""The route table the controllers push to routers. Pure.

`build_routes` turns desired state (apps, their serving release, domains) and
soft state (which instances answer, where) into one AppRoute per app;
`diff` turns two tables into the RouteDelta that takes a router from one to
the other. Routers apply a delta only on top of its exact base version and ask
for a snapshot otherwise, so a lost publication costs a resync, never a wrong
table.
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass, field

from roost.appspec.model import AppSpec
from roost.controller.desired import AppInputs
from roost.controller.domains import default_host, routable_domains
from roost.controller.scheduler import Placement
from roost.controller.store import ReleaseRow
from roost.wire.messages import (
    AppRoute,
    Backend,
    InstanceStatus,
    RouteDelta,
    StaticRoute,
    TlsCertificate,
)


@dataclass(frozen=True)
class AppRouting:
    app: str
    suspended: bool
    release: int  # serving release; 0 = none yet
    spec: AppSpec | None
    static_digest: str
    domains: tuple[str, ...] = ()
    # From the builder (it knows e.g. Django's STATIC_URL); else spec.static.
    static_routes: tuple[StaticRoute, ...] = ()
    # instance ids placed for the serving release's web process
    web_instances: tuple[str, ...] = ()
    host_of: dict[str, str] = field(default_factory=dict)
    # Certificates users added for the app's domains (routers pick by SNI).
    certificates: tuple[TlsCertificate, ...] = ()
    # Pending ACME HTTP-01 answers: (token, key authorization).
    challenges: tuple[tuple[str, str], ...] = ()


def app_routing(a: AppInputs, placed: Iterable[Placement], rel: ReleaseRow | None) -> AppRouting:
    """What an app's route is made from: its serving release `rel` (None: not
    serving yet) and the web instances of that release among `placed`."""
    web = rel.spec.web_process.name if rel and rel.spec.web_process else ""
    mine = [
        p for p in placed if rel is not None and p.release == rel.version and p.process_type == web
    ]
    return AppRouting(
        app=a.row.name,
        suspended=a.row.suspended,
        release=rel.version if rel else 0,
        spec=rel.spec if rel else None,
        static_digest=rel.static_digest if rel else "",
        domains=a.domains,
        certificates=a.certificates,
        challenges=a.challenges,
        static_routes=tuple(rel.static_routes) if rel else (),
        web_instances=tuple(p.instance_id for p in mine),
        host_of={p.instance_id: p.host_id for p in mine},
    )


def hosts_heard(host_ids: Iterable[str], heard: Container[str]) -> bool:
    """Whether every host an instance is placed on has been heard from.

    Until then (or its grace period has passed) a new lease holder publishes
    no route table: its soft state is empty, so every route would lose every
    backend, and routers, which take a new holder's table whole, would
    answer 503 until the hosts' first heartbeats (a controller restart)."""
    return all(h in heard for h in host_ids)


BackendKey = tuple[str, str, int, str, str]  # (instance_id, host, port, unix_socket, host_id)


def backend_keys(
    a: AppRouting, statuses: Mapping[str, InstanceStatus], host_addr: Mapping[str, str]
) -> tuple[BackendKey, ...]:
    """The app's routable backends: its web instances that report up, with a port."""
    out: list[BackendKey] = []
    for iid in a.web_instances:
        st = statuses.get(iid)
        if st is None or st.state != "up" or not st.port:
            continue
        host_id = a.host_of.get(iid, "")
        out.append((iid, host_addr.get(host_id, "127.0.0.1"), st.port, st.unix_socket, host_id))
    return tuple(sorted(out))


def app_route(
    a: AppRouting,
    statuses: Mapping[str, InstanceStatus],
    default_domain: str,
    host_addr: Mapping[str, str],
    backends_of: tuple[BackendKey, ...] | None = None,
) -> AppRoute:
    if backends_of is None:
        backends_of = backend_keys(a, statuses, host_addr)
    backends = [
        Backend(instance_id=iid, host=host, port=port, unix_socket=sock, host_id=host_id)
        for iid, host, port, sock, host_id in backends_of
    ]
    spec = a.spec
    static: list[StaticRoute] = list(a.static_routes) if a.static_digest else []
    if spec is not None and a.static_digest and not static:
        for m in spec.static:
            static.append(
                StaticRoute(
                    url_prefix=m.url_prefix,
                    path=m.path,
                    is_file=m.is_file,
                    directory_indexes=spec.static_directory_indexes,
                )
            )
    auth = spec.basic_auth if spec is not None else None
    # Defence in depth: a custom domain the policy refuses (another app's
    # default hostname, say) is never routed, even when the database holds
    # one; nor is a certificate for a name this app is not routed at.
    hostnames = [default_host(a.app, default_domain)]
    hostnames += routable_domains(a.app, a.domains, default_domain)
    routed = set(hostnames)
    certificates = [c for c in a.certificates if routed.issuperset(c.hostnames)]
    return AppRoute(
        app=a.app,
        hostnames=hostnames,
        backends=backends,  # sorted by instance id
        release=a.release,
        suspended=a.suspended,
        static=static,
        static_bundle=a.static_digest,
        gzip=spec.http.gzip if spec is not None else False,
        expires=dict(spec.http.expires) if spec is not None else {},
        basic_auth=dict(auth.users) if auth is not None else {},
        basic_auth_realm=auth.realm if auth is not None else "",
        certificates=certificates,
        acme_challenges=dict(a.challenges),
    )


def build_routes(
    apps: Iterable[AppRouting],
    statuses: Mapping[str, InstanceStatus],
    default_domain: str,
    host_addr: Mapping[str, str],
) -> dict[str, AppRoute]:
    return {a.app: app_route(a, statuses, default_domain, host_addr) for a in apps}


class RouteCache:
    """`build_routes` that rebuilds only the routes whose inputs changed.

    An app's route depends on its routing inputs and on its backends; when
    both are as last time (and the release spec is the very same object),
    the previous AppRoute object is reused, so `diff` skips it by identity.
    Over thousands of apps a reconcile then costs one pass over the
    placements instead of building and comparing every route.
    """

    def __init__(self) -> None:
        self._last: dict[str, tuple[tuple[object, ...], AppSpec | None, AppRoute]] = {}

    def build(
        self,
        apps: Iterable[AppRouting],
        statuses: Mapping[str, InstanceStatus],
        default_domain: str,
        host_addr: Mapping[str, str],
    ) -> dict[str, AppRoute]:
        out = {a.app: self.route(a, statuses, default_domain, host_addr) for a in apps}
        for gone in self._last.keys() - out.keys():
            del self._last[gone]
        return out

    def route(
        self,
        a: AppRouting,
        statuses: Mapping[str, InstanceStatus],
        default_domain: str,
        host_addr: Mapping[str, str],
    ) -> AppRoute:
        """One app's route: the previous object when its inputs are as last time."""
        backends = backend_keys(a, statuses, host_addr)
        key = (
            a.suspended,
            a.release,
            a.static_digest,
            a.domains,
            a.static_routes,
            a.certificates,
            a.challenges,
            default_domain,
            backends,
        )
        prev = self._last.get(a.app)
        if prev is not None and prev[1] is a.spec and prev[0] == key:
            return prev[2]
        route = app_route(a, statuses, default_domain, host_addr, backends)
        self._last[a.app] = (key, a.spec, route)
        return route

    def forget(self, app: str) -> None:
        self._last.pop(app, None)


def diff_apps(
    old: Mapping[str, AppRoute],
    updates: Mapping[str, AppRoute | None],
    base_version: int,
    fence: int,
) -> RouteDelta | None:
    """The delta for the apps in `updates` only (None: the app is gone);
    every other app's route is the same in both tables."""
    upserts = [
        r
        for name, r in sorted(updates.items())
        if r is not None and (o := old.get(name)) is not r and o != r
    ]
    removals = sorted(n for n, r in updates.items() if r is None and n in old)
    if not upserts and not removals:
        return None
    return RouteDelta(
        base_version=base_version,
        version=base_version + 1,
        upserts=upserts,
        removals=removals,
        fence=fence,
    )


def diff(
    old: dict[str, AppRoute], new: dict[str, AppRoute], base_version: int, fence: int
) -> RouteDelta | None:
    # Identity first: routes the cache reused are skipped without a deep compare.
    updates: dict[str, AppRoute | None] = {name: None for name in old if name not in new}
    updates.update(new)
    return diff_apps(old, updates, base_version, fence)
