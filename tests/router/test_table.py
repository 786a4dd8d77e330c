"""Route table and route tracking: pure, no sockets."""

from __future__ import annotations

import pytest

from roost.router.table import (
    Outcome,
    apply_delta,
    apply_snapshot,
    build_table,
    changed_entries,
    empty_table,
    normalize_host,
)
from roost.router.tracker import RouteTracker
from roost.wire.messages import AppRoute, Backend, RouteDelta, RouteSnapshot


def route(name: str, *hosts: str, port: int = 1) -> AppRoute:
    return AppRoute(
        app=name,
        hostnames=list(hosts),
        backends=[Backend(instance_id=f"{name}-1", host="127.0.0.1", port=port)],
    )


def test_normalize_host() -> None:
    assert normalize_host(b"Example.COM:8080") == "example.com"
    assert normalize_host(b"example.com.") == "example.com"
    assert normalize_host(b"[::1]:8080") == "[::1]"
    assert normalize_host(b"") == ""


def test_lookup_exact_default_domain_and_wildcard() -> None:
    t = build_table(
        1,
        0,
        [route("blog", "www.myblog.org"), route("shop", "*.shop.example"), route("api")],
        "roost.test",
    )
    assert t.lookup(b"www.myblog.org").name == "blog"  # type: ignore[union-attr]
    assert t.lookup(b"WWW.MYBLOG.ORG:443").name == "blog"  # type: ignore[union-attr]
    assert t.lookup(b"api.roost.test").name == "api"  # type: ignore[union-attr]
    assert t.lookup(b"api.roost.test:8080").name == "api"  # type: ignore[union-attr]
    assert t.lookup(b"eu.shop.example").name == "shop"  # type: ignore[union-attr]
    assert t.lookup(b"shop.example") is None  # the wildcard needs a label
    assert t.lookup(b"nope.roost.test") is None
    assert t.lookup(b"x.api.roost.test") is None  # only one label under the default domain
    assert t.lookup(b"") is None


def test_duplicate_hostname_resolves_deterministically() -> None:
    t1 = build_table(1, 0, [route("b", "same.org"), route("a", "same.org")], "d")
    t2 = build_table(1, 0, [route("a", "same.org"), route("b", "same.org")], "d")
    assert t1.lookup(b"same.org").name == t2.lookup(b"same.org").name == "a"  # type: ignore[union-attr]


def test_delta_applies_only_on_its_base() -> None:
    t = build_table(5, 1, [route("a", "a.org"), route("b")], "d")
    out, t2 = apply_delta(
        t,
        RouteDelta(
            base_version=5, version=6, upserts=[route("c", "c.org")], removals=["b"], fence=1
        ),
    )
    assert out is Outcome.APPLIED and t2.version == 6
    assert set(t2.apps) == {"a", "c"}
    assert t2.lookup(b"c.org").name == "c"  # type: ignore[union-attr]
    assert t2.lookup(b"b.d") is None
    assert t.lookup(b"b.d") is not None  # the old table is untouched (in-flight requests)
    assert t2.apps["a"] is t.apps["a"]  # untouched entries are shared

    # A duplicate (already applied) is ignored, a gap asks for a resync.
    assert apply_delta(t2, RouteDelta(base_version=5, version=6, fence=1))[0] is Outcome.IGNORED
    assert apply_delta(t2, RouteDelta(base_version=7, version=8, fence=1))[0] is Outcome.RESYNC
    # A deposed controller (lower fence) is ignored; a new leader at our base applies.
    assert apply_delta(t2, RouteDelta(base_version=6, version=7, fence=0))[0] is Outcome.IGNORED
    out, t3 = apply_delta(t2, RouteDelta(base_version=6, version=7, fence=2))
    assert out is Outcome.APPLIED and t3.fence == 2


def test_upsert_moves_hostnames() -> None:
    t = build_table(1, 0, [route("a", "old.org")], "d")
    _, t2 = apply_delta(t, RouteDelta(base_version=1, version=2, upserts=[route("a", "new.org")]))
    assert t2.lookup(b"old.org") is None
    assert t2.lookup(b"new.org").name == "a"  # type: ignore[union-attr]
    gone, came = changed_entries(t, t2)
    assert [e.name for e in gone] == ["a"] and [e.name for e in came] == ["a"]


def test_delta_keeps_wildcards_right_and_knows_what_changed() -> None:
    t = build_table(1, 0, [route("shop", "*.shop.example"), route("a")], "d")
    _, t2 = apply_delta(t, RouteDelta(base_version=1, version=2, upserts=[route("b")]))
    assert t2.wildcards is t.wildcards  # untouched: reused, not recomputed
    assert t2.lookup(b"x.shop.example").name == "shop"  # type: ignore[union-attr]
    _, t3 = apply_delta(
        t2, RouteDelta(base_version=2, version=3, upserts=[route("eu", "*.eu.shop.example")])
    )
    assert t3.lookup(b"x.eu.shop.example").name == "eu"  # type: ignore[union-attr]
    assert t3.lookup(b"x.shop.example").name == "shop"  # type: ignore[union-attr]
    _, t4 = apply_delta(t3, RouteDelta(base_version=3, version=4, removals=["shop"]))
    assert t4.lookup(b"x.shop.example") is None
    gone, came = changed_entries(t3, t4)
    assert [e.name for e in gone] == ["shop"] and came == []
    assert changed_entries(t2, t4) == (
        [t2.apps["shop"]],
        [t4.apps["eu"]],
    )  # not built on t2 directly: found by comparing


def test_snapshot_older_than_table_is_ignored() -> None:
    t = build_table(10, 2, [route("a")], "d")
    assert apply_snapshot(t, RouteSnapshot(version=9, routes=[], fence=2))[0] is Outcome.IGNORED
    assert apply_snapshot(t, RouteSnapshot(version=10, routes=[], fence=2))[0] is Outcome.IGNORED
    assert apply_snapshot(t, RouteSnapshot(version=1, routes=[], fence=3))[0] is Outcome.APPLIED
    assert apply_snapshot(t, RouteSnapshot(version=9, routes=[], fence=2), force=True)[0] is (
        Outcome.APPLIED
    )


def test_tracker_resyncs_and_replays_buffered_deltas() -> None:
    tr = RouteTracker(empty_table("d"))
    assert tr.want_snapshot  # at start
    # Deltas before any snapshot cannot chain: buffered.
    assert not tr.on_publication(RouteDelta(base_version=3, version=4, upserts=[route("x")]), True)
    assert not tr.on_publication(RouteDelta(base_version=4, version=5, upserts=[route("y")]), False)
    # The snapshot is at version 3: the buffered deltas replay on top.
    assert tr.on_snapshot(RouteSnapshot(version=3, routes=[route("a")]))
    assert tr.table.version == 5 and set(tr.table.apps) == {"a", "x", "y"}
    assert not tr.want_snapshot

    # A gap in versions asks for a snapshot and keeps the old table meanwhile.
    before = tr.table
    assert not tr.on_publication(RouteDelta(base_version=7, version=8, upserts=[route("z")]), True)
    assert tr.want_snapshot and tr.table is before
    # A snapshot that still leaves the buffered delta unchained keeps asking.
    tr.on_snapshot(RouteSnapshot(version=6, routes=[route("a")]))
    assert tr.table.version == 6 and tr.want_snapshot
    tr.on_snapshot(RouteSnapshot(version=7, routes=[route("a")]))
    assert tr.table.version == 8 and set(tr.table.apps) == {"a", "z"} and not tr.want_snapshot


def test_tracker_ignores_duplicates_from_a_second_controller() -> None:
    tr = RouteTracker(empty_table("d"))
    tr.on_snapshot(RouteSnapshot(version=1, routes=[]))
    d = RouteDelta(base_version=1, version=2, upserts=[route("a")])
    assert tr.on_publication(d, False)
    assert not tr.on_publication(d, True)  # same delta via the other publisher, first seen: gap
    assert not tr.want_snapshot and tr.table.version == 2


def test_tracker_applies_published_snapshots() -> None:
    tr = RouteTracker(empty_table("d"))
    assert tr.on_publication(RouteSnapshot(version=4, routes=[route("a")]), True)
    assert tr.synced and not tr.want_snapshot and tr.table.version == 4


def test_layered_deltas_read_as_the_flat_maps_they_stand_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Deltas build tables over shared base maps with a small top (folded in
    now and then): every table, the new one and every earlier one still
    held, must read exactly as the flat copy-per-delta maps would (a model
    of them here): Host and default-domain lookups, wildcards, `apps` and
    `hosts`, gone/came. Hostnames are drawn from a small pool so that apps
    collide on them (the first mapped keeps a Host until it leaves)."""
    import random

    import roost.router.table as table_module

    monkeypatch.setattr(table_module, "_TOP_MIN", 24)  # (folds at this small size too)
    rng = random.Random(21)
    pool = [f"h{k}.example" for k in range(40)] + [f"*.w{k}.example" for k in range(6)]
    probes = [*pool, *(f"x.w{k}.example" for k in range(6)), *(f"a{i}.d" for i in range(60))]
    probes += ["z.x.w1.example", "a1.d:8080", "nope.example"]

    def hosts_of(r: AppRoute) -> list[str]:
        return [normalize_host(h) for h in r.hostnames]

    def flat_lookup(apps: dict[str, AppRoute], hosts: dict[str, str], raw: str) -> str | None:
        host = normalize_host(raw)
        if host in hosts:
            return hosts[host]
        label = host[: -len(".d")] if host.endswith(".d") else ""
        if label and "." not in label and label in apps:
            return label
        wild = sorted((h[1:], a) for h, a in hosts.items() if h.startswith("*."))
        for suffix, name in sorted(wild, key=lambda item: -len(item[0])):
            if host.endswith(suffix) and len(host) > len(suffix):
                return name
        return None

    routes = {f"a{i}": route(f"a{i}", *rng.sample(pool, 2)) for i in range(40)}
    table = build_table(1, 0, routes.values(), "d")
    apps = dict(routes)
    hosts: dict[str, str] = {}
    for name in sorted(apps):
        for h in hosts_of(apps[name]):
            hosts.setdefault(h, name)
    held: list[tuple[object, dict[str, str | None], dict[str, AppRoute]]] = []
    folds = 0
    for v in range(1, 400):
        names = rng.sample([f"a{i}" for i in range(60)], rng.randrange(1, 8))
        removals = [n for n in names[: rng.randrange(0, 3)] if rng.random() < 0.5]
        upserts = [
            route(n, *rng.sample(pool, rng.randrange(0, 3)), port=v)
            for n in names
            if n not in removals
        ]
        gone_want, came_want = [], []
        for n in removals:
            if n in apps:
                old = apps.pop(n)
                hosts = {h: a for h, a in hosts.items() if not (a == n and h in hosts_of(old))}
                gone_want.append(old)
        for r in upserts:
            if r.app in apps:
                old = apps[r.app]
                hosts = {h: a for h, a in hosts.items() if not (a == r.app and h in hosts_of(old))}
                gone_want.append(old)
            apps[r.app] = r
            came_want.append(r)
        for r in upserts:
            for h in hosts_of(r):
                hosts.setdefault(h, r.app)
        before = table
        out, table = apply_delta(
            table, RouteDelta(base_version=v, version=v + 1, upserts=upserts, removals=removals)
        )
        assert out is Outcome.APPLIED
        folds += not table.apps_top
        gone, came = changed_entries(before, table)
        assert [e.route for e in gone] == gone_want and [e.route for e in came] == came_want
        seen = {p: flat_lookup(apps, hosts, p) for p in probes}
        for p, want in seen.items():
            got = table.lookup(p.encode())
            assert (got.name if got else None) == want, (v, p)
            if got is not None:
                assert got.route is apps[got.name]
        assert {n: e.route for n, e in table.apps.items()} == apps
        assert {h: e.name for h, e in table.hosts.items()} == hosts
        assert len(table) == len(apps)
        if v % 50 == 0:
            held.append((table, seen, dict(apps)))
    assert folds >= 2  # the tops were folded into new bases along the way
    for old_table, seen, old_apps in held:  # earlier tables read as they did
        for p, want in seen.items():
            got = old_table.lookup(p.encode())  # type: ignore[attr-defined]
            assert (got.name if got else None) == want
        assert {n: e.route for n, e in old_table.apps.items()} == old_apps  # type: ignore[attr-defined]


def test_an_entry_without_features_is_plain_and_one_with_them_is_not() -> None:
    """AppEntry skips its sorting and encoding for what a route lacks: the
    same fields either way (longest prefix first, tokens as base64)."""
    import base64

    from roost.router.table import AppEntry
    from roost.wire.messages import StaticRoute

    bare = AppEntry(route("a", "a.org"))
    assert (bare.static, bare.expires, bare.auth_tokens) == ((), (), frozenset())
    assert bare.plain and bare.hostnames == ("a.org",)
    full = AppEntry(
        AppRoute(
            app="b",
            hostnames=["B.org."],
            backends=[],
            static=[
                StaticRoute(url_prefix="/s/", path="s"),
                StaticRoute(url_prefix="/s/long/", path="l"),
                StaticRoute(url_prefix="", path="x"),
            ],
            expires={"/s/": 60, "/s/long/": 3600},
            basic_auth={"u": "p"},
        )
    )
    assert [p for p, _ in full.static] == [b"/s/long/", b"/s/"]
    assert full.expires == ((b"/s/long/", 3600), (b"/s/", 60))
    assert full.auth_tokens == frozenset({base64.b64encode(b"u:p")})
    assert not full.plain and full.hostnames == ("b.org",)
