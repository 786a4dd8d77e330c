"""The data proxy's HAProxy configuration, rendered from listeners (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from roost.runner.dataproxy import (
    ProxyError,
    ProxyListener,
    ProxyServer,
    decode_listeners,
    encode_listeners,
    render,
    seed_state,
    servers_up,
)

HOME = Path("/run/roost/proxy")


def pg(name: str = "pair-a", port: int = 6001) -> ProxyListener:
    return ProxyListener(
        kind="postgres",
        name=name,
        local_port=port,
        servers=(("10.0.0.2", 5432, 8008), ("10.0.0.1", 5432, 8008)),
    )


def redis(name: str = "app1", port: int = 6101) -> ProxyListener:
    return ProxyListener(
        kind="redis",
        name=name,
        local_port=port,
        servers=(ProxyServer("10.0.0.1", 6380, 6380),),
        password="s3cret_-x",
    )


def section(text: str, name: str) -> list[str]:
    lines = text.splitlines()
    start = lines.index(f"listen {name}")
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith(" ")), None)
    return [line.strip() for line in lines[start + 1 : end]]


def test_postgres_listener_checks_patroni_primary_on_each_member() -> None:
    body = section(render([pg()], "127.0.0.1", HOME), "postgres-pair-a")
    assert body[0] == "bind 127.0.0.1:6001"
    assert "option httpchk GET /primary" in body
    assert "http-check expect status 200" in body
    servers = [line for line in body if line.startswith("server ")]
    # Sorted, each checked on its Patroni REST port, not the database's.
    assert servers == [
        "server 10_0_0_1_5432 10.0.0.1:5432 check port 8008",
        "server 10_0_0_2_5432 10.0.0.2:5432 check port 8008",
    ]
    assert any("on-marked-down shutdown-sessions" in line for line in body)


def test_redis_listener_speaks_auth_ping_and_asks_for_the_master() -> None:
    body = section(render([redis()], "127.0.0.1", HOME), "redis-app1")
    checks = [line for line in body if line.startswith("tcp-check")]
    assert checks == [
        "tcp-check connect",
        "tcp-check send AUTH\\ s3cret_-x\\r\\n",
        "tcp-check expect string +OK",
        "tcp-check send PING\\r\\n",
        "tcp-check expect string +PONG",
        "tcp-check send info\\ replication\\r\\n",
        "tcp-check expect string role:master",
        "tcp-check send QUIT\\r\\n",
        "tcp-check expect string +OK",
    ]
    assert "option tcp-check" in body
    assert "server 10_0_0_1_6380 10.0.0.1:6380 check port 6380" in body


def test_same_listeners_in_any_order_render_the_same_text() -> None:
    a = render([pg(), redis(), pg("pair-b", 6002)], "127.0.0.1", HOME)
    b = render([pg("pair-b", 6002), redis(), pg()], "127.0.0.1", HOME)
    assert a == b
    assert a.index("listen postgres-pair-a") < a.index("listen postgres-pair-b")


def test_ipv6_addresses_are_bracketed() -> None:
    lst = ProxyListener("postgres", "p", 6001, (("fd00::2", 5432, 8008),))
    body = section(render([lst], "::1", HOME), "postgres-p")
    assert body[0] == "bind [::1]:6001"
    assert "server fd00_2_5432 [fd00::2]:5432 check port 8008" in body


@pytest.mark.parametrize(
    ("listeners", "says"),
    [
        ([pg(), pg("pair-b", 6001)], "port 6001 is also"),
        ([pg(), pg(port=6002)], "named twice"),
        ([pg("Pair A")], "lower-case"),
        ([ProxyListener("redis", "r", 6101, (), password="a b\r\nFLUSHALL")], "password"),
        ([ProxyListener("postgres", "p", 70000)], "out of range"),
        ([ProxyListener("postgres", "p", 6001, (("a b", 1, 2),))], "bad server"),
        ([ProxyListener("mysql", "p", 6001)], "unknown kind"),  # type: ignore[arg-type]
    ],
)
def test_what_cannot_make_a_configuration_is_refused(
    listeners: list[ProxyListener], says: str
) -> None:
    with pytest.raises(ProxyError, match=says):
        render(listeners, "127.0.0.1", HOME)


def test_a_redis_listener_and_a_postgres_one_may_share_a_name() -> None:
    text = render([pg("app1"), redis("app1")], "127.0.0.1", HOME)
    assert "listen postgres-app1" in text and "listen redis-app1" in text


def test_the_server_state_file_is_kept_and_read_across_reloads() -> None:
    text = render([pg()], "127.0.0.1", HOME)
    assert "server-state-file /run/roost/proxy/haproxy.state" in text
    assert "load-server-state-from-file global" in text
    assert "stats socket /run/roost/proxy/haproxy.sock" in text


def test_servers_up_reads_haproxy_stat_csv() -> None:
    csv = (
        "# pxname,svname,qcur,status,weight\n"
        "postgres-p,FRONTEND,,OPEN,\n"
        "postgres-p,s1,0,UP,1\n"
        "postgres-p,s2,0,DOWN,1\n"
        "postgres-p,BACKEND,0,UP,1\n"
        "redis-r,s3,0,UP 1/2,1\n"
        "redis-r,s4,0,MAINT,1\n"
    )
    assert servers_up(csv) == {"postgres-p": ["s1"], "redis-r": ["s3"]}
    assert servers_up("") == {}


def test_the_listeners_file_round_trips_and_refuses_what_is_not_one() -> None:
    listeners = [pg(), redis()]
    assert decode_listeners(encode_listeners(listeners)) == listeners
    assert decode_listeners(b"[]") == []
    for bad in (b"{}", b"[{}]", b'[{"kind": "postgres", "name": "p", "local_port": "x"}]', b"!"):
        with pytest.raises(ProxyError, match="not a list of listeners"):
            decode_listeners(bad)


KNOWN = """1
# be_id be_name srv_id srv_name ...
2 postgres-pair-a 1 10_0_0_1_5432 10.0.0.1 2 0 1 1 7 15 3 2 6 0 0 0 - 5432 - 0 8008 - - 8008
2 postgres-pair-a 2 10_0_0_2_5432 10.0.0.2 0 0 1 1 7 15 2 0 6 0 0 0 - 5432 - 0 8008 - - 8008
3 postgres-gone 1 10_0_0_9_5432 10.0.0.9 2 0 1 1 7 15 3 2 6 0 0 0 - 5432 - 0 8008 - - 8008
"""


def test_seed_state_keeps_known_servers_and_starts_new_ones_down() -> None:
    text = seed_state(KNOWN, [pg(), pg("pair-b", 6002)])
    lines = text.splitlines()
    assert lines[0] == "1" and lines[1].startswith("# be_id be_name srv_id srv_name srv_addr")
    by_key = {(c[1], c[3]): c for c in (x.split() for x in lines[2:])}
    assert set(by_key) == {
        ("postgres-pair-a", "10_0_0_1_5432"),
        ("postgres-pair-a", "10_0_0_2_5432"),
        ("postgres-pair-b", "10_0_0_1_5432"),
        ("postgres-pair-b", "10_0_0_2_5432"),
    }, "a listener no longer configured is dropped"
    # Known: as HAProxy last had them (the primary up, the standby down).
    assert by_key["postgres-pair-a", "10_0_0_1_5432"][5] == "2"
    assert by_key["postgres-pair-a", "10_0_0_2_5432"][5] == "0"
    # New: stopped, health 0, no forced ids; address and ports as configured.
    new = by_key["postgres-pair-b", "10_0_0_2_5432"]
    assert (new[0], new[2], new[4], new[5], new[12], new[15], new[16]) == (
        "0",
        "0",
        "10.0.0.2",
        "0",
        "0",
        "0",
        "0",
    )
    assert (new[18], new[21]) == ("5432", "8008")
    assert len(new) == len(lines[1].split()) - 1, "one value per field"


def test_seed_state_on_a_first_start_has_every_server_down() -> None:
    text = seed_state("", [pg()])
    rows = [x.split() for x in text.splitlines()[2:]]
    assert len(rows) == 2 and all(r[5] == "0" for r in rows)
    assert seed_state("", []) == seed_state("garbage\n", [])
