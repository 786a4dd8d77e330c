"""Incremental route building: unchanged apps keep their route object."""

from __future__ import annotations

from roost.appspec.model import AppSpec, ProcessSpec
from roost.controller.routes import AppRouting, RouteCache, build_routes, diff
from roost.wire.messages import InstanceState, InstanceStatus

SPEC = AppSpec(
    processes={"web": ProcessSpec(name="web", kind="wsgi", entrypoint="app:app", web=True)}
)


def _st(iid: str, state: InstanceState = "up", port: int = 5000) -> InstanceStatus:
    return InstanceStatus(
        instance_id=iid, app="x", release=1, process_type="web", state=state, port=port
    )


def _apps(spec: AppSpec = SPEC) -> list[AppRouting]:
    return [
        AppRouting(
            app=name,
            suspended=False,
            release=1,
            spec=spec,
            static_digest="",
            web_instances=(f"{name}1", f"{name}2"),
            host_of={f"{name}1": "h1", f"{name}2": "h2"},
        )
        for name in ("a", "b", "c")
    ]


def test_cache_matches_build_routes_and_reuses_unchanged_routes() -> None:
    statuses = {i: _st(i) for i in ("a1", "a2", "b1", "b2", "c1", "c2")}
    addrs = {"h1": "10.0.0.1", "h2": "10.0.0.2"}
    cache = RouteCache()
    first = cache.build(_apps(), statuses, "localhost", addrs)
    assert first == build_routes(_apps(), statuses, "localhost", addrs)

    second = cache.build(_apps(), statuses, "localhost", addrs)
    assert all(second[n] is first[n] for n in "abc")
    assert diff(first, second, 7, 1) is None

    statuses["b2"] = _st("b2", "starting")  # b loses a backend
    third = cache.build(_apps(), statuses, "localhost", addrs)
    assert third["a"] is first["a"] and third["c"] is first["c"]
    assert [b.instance_id for b in third["b"].backends] == ["b1"]
    delta = diff(first, third, 7, 1)
    assert delta is not None and [r.app for r in delta.upserts] == ["b"]
    assert (delta.base_version, delta.version, delta.fence) == (7, 8, 1)

    addrs["h1"] = "10.0.0.9"  # a host's address changes: every app using it
    fourth = cache.build(_apps(), statuses, "localhost", addrs)
    assert all(fourth[n] is not third[n] for n in "abc")


def test_a_new_spec_object_rebuilds_even_with_equal_keys() -> None:
    statuses = {i: _st(i) for i in ("a1", "a2", "b1", "b2", "c1", "c2")}
    cache = RouteCache()
    first = cache.build(_apps(), statuses, "localhost", {})
    gz = AppSpec(
        processes=SPEC.processes, http=type(SPEC.http)(gzip=True, expires=dict(SPEC.http.expires))
    )
    second = cache.build(_apps(gz), statuses, "localhost", {})
    assert second["a"] is not first["a"] and second["a"].gzip
