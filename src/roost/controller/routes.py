"""The route table the controllers push to routers. Pure.

`build_routes` turns desired state (apps, their serving release, domains) and
soft state (which instances answer, where) into one AppRoute per app;
`diff` turns two tables into the RouteDelta that takes a router from one to
the other. Routers apply a delta only on top of its exact base version and ask
for a snapshot otherwise, so a lost publication costs a resync, never a wrong
table.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from roost.appspec.model import AppSpec
from roost.wire.messages import AppRoute, Backend, InstanceStatus, RouteDelta, StaticRoute


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


def app_route(
    a: AppRouting,
    statuses: dict[str, InstanceStatus],
    default_domain: str,
    host_addr: dict[str, str],
) -> AppRoute:
    backends: list[Backend] = []
    for iid in a.web_instances:
        st = statuses.get(iid)
        if st is None or st.state != "up" or not st.port:
            continue
        host_id = a.host_of.get(iid, "")
        backends.append(
            Backend(
                instance_id=iid,
                host=host_addr.get(host_id, "127.0.0.1"),
                port=st.port,
                unix_socket=st.unix_socket,
                host_id=host_id,
            )
        )
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
    return AppRoute(
        app=a.app,
        hostnames=[f"{a.app}.{default_domain}", *a.domains],
        backends=sorted(backends, key=lambda b: b.instance_id),
        release=a.release,
        suspended=a.suspended,
        static=static,
        static_bundle=a.static_digest,
        gzip=spec.http.gzip if spec is not None else False,
        expires=dict(spec.http.expires) if spec is not None else {},
        basic_auth=dict(auth.users) if auth is not None else {},
        basic_auth_realm=auth.realm if auth is not None else "",
    )


def build_routes(
    apps: Iterable[AppRouting],
    statuses: dict[str, InstanceStatus],
    default_domain: str,
    host_addr: dict[str, str],
) -> dict[str, AppRoute]:
    return {a.app: app_route(a, statuses, default_domain, host_addr) for a in apps}


def diff(
    old: dict[str, AppRoute], new: dict[str, AppRoute], base_version: int, fence: int
) -> RouteDelta | None:
    upserts = [r for name, r in sorted(new.items()) if old.get(name) != r]
    removals = sorted(name for name in old if name not in new)
    if not upserts and not removals:
        return None
    return RouteDelta(
        base_version=base_version,
        version=base_version + 1,
        upserts=upserts,
        removals=removals,
        fence=fence,
    )
