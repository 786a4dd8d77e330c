from __future__ import annotations

from roost.appspec.model import AppSpec, BasicAuth, HttpOptions, ProcessSpec, StaticMapping
from roost.controller.routes import AppRouting, build_routes, diff, diff_apps
from roost.wire.messages import AppRoute, InstanceStatus

SPEC = AppSpec(
    processes={"web": ProcessSpec(name="web", kind="wsgi", entrypoint="app:app", web=True)},
    static=[StaticMapping(url_prefix="/static", path="static")],
    http=HttpOptions(gzip=True, expires={"/static": 300}),
    basic_auth=BasicAuth(users={"u": "p"}, realm="R"),
)


def _st(iid: str, state: str, port: int) -> InstanceStatus:
    return InstanceStatus(
        instance_id=iid,
        app="a",
        release=1,
        process_type="web",
        state=state,
        port=port,
        unix_socket=f"/s/{iid}",  # type: ignore[arg-type]
    )


def _routing(**kw: object) -> AppRouting:
    base = dict(
        app="a",
        suspended=False,
        release=1,
        spec=SPEC,
        static_digest="sha256:x",
        web_instances=("i1", "i2"),
        host_of={"i1": "h1", "i2": "h2"},
    )
    base.update(kw)
    return AppRouting(**base)  # type: ignore[arg-type]


def test_only_up_instances_are_backends() -> None:
    table = build_routes(
        [_routing()],
        {"i1": _st("i1", "up", 5001), "i2": _st("i2", "starting", 5002)},
        "localhost",
        {"h1": "10.0.0.1"},
    )
    route = table["a"]
    assert [b.instance_id for b in route.backends] == ["i1"]
    assert route.backends[0].host == "10.0.0.1" and route.backends[0].port == 5001
    assert route.hostnames == ["a.localhost"]
    assert route.gzip and route.expires == {"/static": 300}
    assert route.basic_auth == {"u": "p"} and route.basic_auth_realm == "R"
    assert route.static[0].url_prefix == "/static"


def test_diff_carries_only_changes_and_removals() -> None:
    s1 = {"i1": _st("i1", "up", 5001)}
    old = build_routes([_routing(), _routing(app="b")], s1, "localhost", {})
    s2 = {"i1": _st("i1", "up", 5001), "i2": _st("i2", "up", 5002)}
    new = build_routes([_routing()], s2, "localhost", {})
    delta = diff(old, new, base_version=7, fence=3)
    assert delta is not None
    assert delta.base_version == 7 and delta.version == 8 and delta.fence == 3
    assert [r.app for r in delta.upserts] == ["a"] and delta.removals == ["b"]
    assert diff(new, new, 8, 3) is None


def test_certificates_travel_with_the_route() -> None:
    from roost.wire.messages import TlsCertificate

    cert = TlsCertificate(hostnames=["www.a.example"], cert_pem="CERT", key_pem="KEY")
    table = build_routes(
        [_routing(certificates=(cert,), domains=("www.a.example",))], {}, "localhost", {}
    )
    assert table["a"].certificates == [cert]
    assert "www.a.example" in table["a"].hostnames


def test_a_delta_for_some_apps_leaves_the_others_alone() -> None:
    old = {n: AppRoute(app=n, hostnames=[f"{n}.localhost"]) for n in ("a", "b", "c")}
    same, changed = old["a"], AppRoute(app="b", hostnames=["b.localhost"], suspended=True)
    delta = diff_apps(old, {"a": same, "b": changed, "c": None, "z": None}, 4, 2)
    assert delta is not None and (delta.base_version, delta.version, delta.fence) == (4, 5, 2)
    assert delta.upserts == [changed] and delta.removals == ["c"]
    assert diff_apps(old, {"a": same}, 4, 2) is None
