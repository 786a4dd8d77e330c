"""What a fresh servicehost takes on of a lost one's state (pure): the
recorded credentials and ports, or a refusal that says why."""

from __future__ import annotations

import pytest

from roost.datadir import s3plan
from roost.servicehost.adopt import AdoptError, plan
from roost.servicehost.names import new_password
from roost.servicehost.state import HostState, PgCluster, S3Node, S3Revoked, Service

PW = "A" * 32


def lost(services: dict[str, Service], pg_port: int = 5500) -> HostState:
    return HostState(
        postgres=PgCluster(port=pg_port, password="su-old", backup_password="B" * 32),
        services=services,
    )


def mine(pg_port: int = 5600) -> HostState:
    return HostState(postgres=PgCluster(port=pg_port, password="su-new", initialized=True))


def pg(app: str = "shop", password: str = PW, name: str = "") -> Service:
    db = name or "app_" + app.replace("-", "_")
    return Service(app=app, kind="postgres", port=5500, database=db, username=db, password=password)


def redis(app: str = "shop", port: int = 6400, password: str = PW) -> Service:
    return Service(
        app=app, kind="redis", port=port, password=password, memory_mb=0,
        admin_password="C" * 32, backup_password="",
    )  # fmt: skip


def test_the_recorded_credentials_and_ports_are_taken_on() -> None:
    p = plan(lost({"postgres/shop": pg(), "redis/shop": redis()}), mine(), 0, 64)
    assert p.pg_port == 5500 and p.backup_password == "B" * 32
    assert p.ports == (5500, 6400)  # PostgreSQL moves: its recorded port must be free too
    db, r = p.services["postgres/shop"], p.services["redis/shop"]
    assert (db.database, db.username, db.password, db.port) == ("app_shop", "app_shop", PW, 5500)
    assert (r.port, r.password, r.admin_password, r.memory_mb) == (6400, PW, "C" * 32, 64)
    assert len(r.backup_password) >= 16  # missing (an older state): made


def test_the_port_this_host_frees_by_moving_is_not_asked_free() -> None:
    p = plan(lost({"postgres/shop": pg(), "redis/shop": redis(port=5600)}), mine(5600), 0, 64)
    assert p.ports == (5500,)
    same = plan(lost({"postgres/shop": pg()}, 5600), mine(5600), 0, 64)
    assert same.ports == ()  # already there


def test_redis_alone_leaves_postgres_where_it_is() -> None:
    p = plan(lost({"redis/shop": redis()}), mine(), 0, 64)
    assert (p.pg_port, p.backup_password, p.ports) == (5600, "", (6400,))


@pytest.mark.parametrize(
    ("services", "fixed", "why"),
    [
        ({}, 0, "holds no app's service"),
        ({"postgres/shop": pg()}, 5432, "ROOST_POSTGRES_PORT fixes"),
        ({"postgres/shop": pg(password="x y")}, 0, "not one Roost makes"),
        ({"redis/shop": redis(password="pw\nuser evil on")}, 0, "not one Roost makes"),
        ({"postgres/shop": pg(name="postgres")}, 0, "must be named app_shop"),
        ({"postgres/other": pg()}, 0, "is not shop's postgres"),
        ({"postgres/Bad!": pg(app="Bad!", name="x")}, 0, "is not valid"),
        ({"redis/shop": redis(port=80)}, 0, "is not one Roost uses"),
        ({"redis/a": redis("a"), "redis/b": redis("b")}, 0, "the same port"),
        ({"postgres/a": pg("a"), "redis/b": redis("b", port=5500)}, 0, "the same port"),
    ],
)
def test_a_state_that_cannot_be_taken_on_is_refused(
    services: dict[str, Service], fixed: int, why: str
) -> None:
    with pytest.raises(AdoptError, match=why):
        plan(lost(services), mine(), fixed, 64)


def test_a_host_without_its_cluster_yet_refuses() -> None:
    with pytest.raises(AdoptError, match="no PostgreSQL cluster yet"):
        plan(lost({"redis/shop": redis()}), HostState(), 0, 64)
    assert len(new_password()) >= 16  # what the password check admits is what Roost makes


def _s3_node() -> S3Node:
    return S3Node(
        ports=s3plan.Ports(8333, 9333, 19333, 8080, 18080, 8888, 18888, 18333),
        admin_key="K" * 20, admin_secret="S" * 40,
        revoked=[S3Revoked(name="app-old-" + "R" * 20, access_key="R" * 20, secret="T" * 40)],
    )  # fmt: skip


def bucket(app: str = "pics", key: str = "P" * 20, port: int = 8333) -> Service:
    name = app.replace("_", "-")
    return Service(app=app, kind="s3", port=port, database=name, username=key, password="Q" * 40)


def test_buckets_come_with_the_s3_servers_ports_and_keys() -> None:
    old = lost({"redis/shop": redis(), "s3/pics": bucket()})
    old.s3 = _s3_node()
    p = plan(old, mine(), 0, 64)
    assert p.s3 == old.s3  # its own key, the revoked keys, every port
    assert p.services["s3/pics"] == bucket()
    assert p.ports == tuple(sorted([6400, *old.s3.ports.all()]))


@pytest.mark.parametrize(
    ("svc", "why"),
    [
        (bucket(port=9999), "not on the S3 server's port"),
        (bucket(key="R" * 20), "both in force and revoked"),
        (bucket(key="short"), "16 to 128 character token"),
        (
            Service(
                app="pics",
                kind="s3",
                port=8333,
                database="other",
                username="P" * 20,
                password="Q" * 40,
            ),
            "must be named pics",
        ),
    ],
)
def test_a_bucket_that_cannot_be_served_as_recorded_is_refused(svc: Service, why: str) -> None:
    old = lost({"s3/pics": svc})
    old.s3 = _s3_node()
    with pytest.raises(AdoptError, match=why):
        plan(old, mine(), 0, 64)
    with pytest.raises(AdoptError, match="moving them into the shared tree is not done"):
        plan(old, mine(), 0, 64, gateway_port=7154)  # a cluster's host: not even looked at


GW = 7154  # the cluster's gateways' port (weedplan's s3_port)


def test_a_cluster_bucket_is_taken_on_as_a_record() -> None:
    # No S3 server in the state: the bucket was made in the shared tree.
    old = lost({"redis/shop": redis(), "postgres/shop": pg(), "s3/pics": bucket(port=GW)})
    p = plan(old, mine(), 0, 64, gateway_port=GW)
    assert p.cluster_buckets and p.s3 is None  # no server of its own to start
    assert p.services["s3/pics"] == bucket(port=GW)  # same key, secret, bucket, port
    assert p.ports == (5500, 6400)  # the gateway's port is the cluster's, held already
    assert p.services["redis/shop"].port == 6400 and p.pg_port == 5500  # the rest as ever


def test_a_one_machine_bucket_is_not_a_cluster_one() -> None:
    old = lost({"s3/pics": bucket()})
    old.s3 = _s3_node()
    p = plan(old, mine(), 0, 64)
    assert not p.cluster_buckets and p.s3 == old.s3


@pytest.mark.parametrize(
    ("services", "gateway", "why"),
    [
        ({"s3/pics": bucket(port=GW)}, 0, "runs no S3 gateways"),
        ({"redis/shop": redis(), "s3/pics": bucket(port=GW)}, 0, "runs no S3 gateways"),
        ({"s3/pics": bucket(port=8333)}, GW, "not on the S3 server's port \\(7154\\)"),
        ({"s3/pics": bucket(port=GW, key="short")}, GW, "16 to 128 character token"),
        (
            {"s3/pics": bucket(port=GW), "s3/docs": bucket("docs", port=GW)},
            GW,
            "another app's too",
        ),
    ],
)
def test_a_cluster_bucket_that_cannot_be_taken_on_is_refused(
    services: dict[str, Service], gateway: int, why: str
) -> None:
    with pytest.raises(AdoptError, match=why):
        plan(lost(services), mine(), 0, 64, gateway_port=gateway)
