"""Pure parts of an app's Redis pair: replication config and health
(redisrepl.py), the sentinels' config, registration plan and answers
(sentinel.py)."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import REGISTRY

from roost.servicehost import metrics, redispairs, redisrepl, sentinel
from roost.servicehost.redisrepl import ReplicaSeen, Replication, ReplicationView, judge, read_view
from roost.servicehost.resp import parse_info
from roost.servicehost.sentinel import Monitor, SentinelSpec
from roost.wire.cluster import ClusterConfig, Endpoint
from roost.wire.messages import RedisCopy, ServerStatus, ServiceHostStatus

# ---------------------------------------------------------------- redis.conf of a pair


def test_a_replica_follows_its_master_as_the_replica_user_and_announces_itself() -> None:
    lines = redisrepl.conf_lines(Replication("10.0.0.2", "s3cret", ("10.0.0.1", 7001)), 7001)
    assert "replicaof 10.0.0.1 7001" in lines
    assert "replica-announce-ip 10.0.0.2" in lines
    assert "replica-announce-port 7001" in lines
    assert f"masteruser {redisrepl.REPLICA_USER}" in lines
    assert 'masterauth "s3cret"' in lines
    user = next(x for x in lines if x.startswith(f"user {redisrepl.REPLICA_USER} "))
    # It may sync and nothing else: no key, no channel, no other command.
    assert ">s3cret" in user and "resetkeys" in user and "-@all" in user
    assert set(user.split()[-4:]) == {"+psync", "+sync", "+replconf", "+ping"}


def test_a_master_carries_the_replica_user_too_but_follows_nobody() -> None:
    lines = redisrepl.conf_lines(Replication("10.0.0.1", "pw"), 7001)
    assert not any(x.startswith("replicaof") for x in lines)
    assert any(x.startswith(f"user {redisrepl.REPLICA_USER} ") for x in lines)
    # No min-replicas-to-write: a lost replica must not stop the master's writes.
    assert not any("min-replicas" in x for x in lines)


# ---------------------------------------------------------------- INFO replication

MASTER_INFO = """# Replication
role:master
connected_slaves:1
slave0:ip=10.0.0.2,port=7001,state=online,offset=1000,lag=0
master_failover_state:no-failover
master_repl_offset:1500
"""

REPLICA_INFO = """# Replication
role:slave
master_host:10.0.0.1
master_port:7001
master_link_status:down
slave_repl_offset:900
"""


def test_a_masters_view_lists_its_replicas_and_their_lag() -> None:
    view = read_view(parse_info(MASTER_INFO))
    assert view.role == "master"
    assert view.offset == 1500
    assert view.replicas == (ReplicaSeen("10.0.0.2", 7001, "online", 1000),)
    assert view.lag_bytes() == 500
    assert judge(view) == ""
    assert judge(view, max_lag_bytes=499) == "master: its replica is 500 bytes behind"


def test_a_replicas_view_names_its_master_and_link() -> None:
    view = read_view(parse_info(REPLICA_INFO))
    assert (view.role, view.master_host, view.master_port, view.link_up) == (
        "slave", "10.0.0.1", 7001, False,
    )  # fmt: skip
    assert judge(view) == "replica: its link to the master 10.0.0.1:7001 is down"
    up = read_view(parse_info(REPLICA_INFO.replace("status:down", "status:up")))
    assert judge(up) == ""


def test_a_master_without_a_streaming_replica_is_a_problem() -> None:
    alone = ReplicationView(role="master", offset=10)
    assert judge(alone) == "master: no replica is connected (its writes exist on this host only)"
    assert alone.lag_bytes() == 10
    syncing = ReplicationView(
        role="master", offset=10, replicas=(ReplicaSeen("h", 1, "wait_bgsave", 0),)
    )
    assert judge(syncing) == "master: its replica is not streaming yet: h:1 (wait_bgsave)"


def test_a_malformed_replica_line_is_skipped_not_a_crash() -> None:
    info = parse_info(MASTER_INFO.replace("port=7001", "port=x"))
    assert read_view(info).replicas == ()


# ---------------------------------------------------------------- sentinel


def spec(tmp: Path) -> SentinelSpec:
    return SentinelSpec(
        port=26379, listen=["127.0.0.1", "10.0.0.3"], announce_host="10.0.0.3",
        password="sp", directory=tmp,
    )  # fmt: skip


def test_the_sentinel_conf_announces_its_host_and_guards_itself(tmp_path: Path) -> None:
    conf = sentinel.render_conf(spec(tmp_path)).splitlines()
    assert "bind 127.0.0.1 10.0.0.3" in conf
    assert "port 26379" in conf
    assert "sentinel announce-ip 10.0.0.3" in conf
    assert "requirepass sp" in conf and "sentinel sentinel-pass sp" in conf
    assert f'dir "{tmp_path}"' in conf
    assert f'pidfile "{tmp_path / sentinel.PIDFILE}"' in conf
    # No master in it: masters are given at run time (the file is Sentinel's).
    assert not any(x.startswith("sentinel monitor") for x in conf)


def monitor(name: str = "roost-blog", host: str = "10.0.0.1") -> Monitor:
    return Monitor(name=name, host=host, port=7001, auth_user="roost-admin", auth_pass="ap")


def test_a_new_master_is_monitored_with_quorum_two_and_its_login() -> None:
    cmds = sentinel.plan([monitor()], {})
    assert cmds[0] == ("SENTINEL", "MONITOR", "roost-blog", "10.0.0.1", "7001", "2")
    set_cmd = cmds[1]
    assert set_cmd[:3] == ("SENTINEL", "SET", "roost-blog")
    pairs = dict(zip(set_cmd[3::2], set_cmd[4::2], strict=True))
    assert pairs == {
        "auth-user": "roost-admin", "auth-pass": "ap", "quorum": "2",
        "down-after-milliseconds": str(sentinel.DOWN_AFTER_MS),
        "failover-timeout": str(sentinel.FAILOVER_TIMEOUT_MS), "parallel-syncs": "1",
    }  # fmt: skip
    assert len(cmds) == 2


def test_a_watched_master_keeps_the_address_the_sentinel_knows() -> None:
    seen = {
        "roost-blog": {
            "name": "roost-blog", "ip": "10.0.0.2", "port": "7001", "quorum": "2",
            "down-after-milliseconds": "9999", "failover-timeout": "10000",
            "parallel-syncs": "1",
        }
    }  # fmt: skip
    cmds = sentinel.plan([monitor(host="10.0.0.1")], seen)
    # No MONITOR (that would move it back to the old master): only SET,
    # with the login and the one timing that differs.
    assert [c[:2] for c in cmds] == [("SENTINEL", "SET")]
    pairs = dict(zip(cmds[0][3::2], cmds[0][4::2], strict=True))
    assert pairs == {
        "auth-user": "roost-admin", "auth-pass": "ap",
        "down-after-milliseconds": str(sentinel.DOWN_AFTER_MS),
    }  # fmt: skip


def test_masters_others_registered_are_left_alone() -> None:
    seen = {"roost-other": {"name": "roost-other", "ip": "10.0.0.5", "port": "7002"}}
    cmds = sentinel.plan([monitor()], seen)
    assert all("roost-other" not in c for c in cmds)
    assert sentinel.forget("roost-blog") == ("SENTINEL", "REMOVE", "roost-blog")


def test_sentinel_masters_reply_is_read_by_name() -> None:
    reply = [["name", "roost-a", "ip", "10.0.0.1", "port", "7001"], ["ip", "x"]]
    assert sentinel.masters_seen(reply) == {
        "roost-a": {"name": "roost-a", "ip": "10.0.0.1", "port": "7001"}
    }


def test_the_master_is_what_a_quorum_of_sentinels_names() -> None:
    a, b = ("10.0.0.1", 7001), ("10.0.0.2", 7001)
    assert sentinel.agreed_master([a, a, b]) == a
    assert sentinel.agreed_master([a, b]) is None  # one each: no agreement
    assert sentinel.agreed_master([a, None]) is None  # one alone is not a quorum
    assert sentinel.agreed_master([]) is None
    assert sentinel.agreed_master([b], quorum=1) == b


def test_get_master_addr_replies() -> None:
    assert sentinel.address(["10.0.0.1", "7001"]) == ("10.0.0.1", 7001)
    assert sentinel.address(None) is None
    assert sentinel.address(["10.0.0.1"]) is None
    assert sentinel.address(["10.0.0.1", "x"]) is None
    assert sentinel.master_name("blog") == "roost-blog"


def test_a_starting_copy_follows_the_master_the_sentinels_agree_on() -> None:
    own, partner = ("10.0.0.1", 7001), ("10.0.0.2", 7001)
    # The old master, back after a failover: it follows the new one.
    assert redisrepl.start_master(partner, own, partner, recorded_master=True) == partner
    assert redisrepl.start_master(own, own, partner, recorded_master=False) is None
    # No sentinel agreement: the role recorded last.
    assert redisrepl.start_master(None, own, partner, recorded_master=True) is None
    assert redisrepl.start_master(None, own, partner, recorded_master=False) == partner


def test_the_watch_sends_nothing_to_a_sentinel_that_knows_the_master() -> None:
    seen = {
        "roost-blog": {
            "name": "roost-blog", "ip": "10.0.0.2", "port": "7001", "quorum": "2",
            "down-after-milliseconds": str(sentinel.DOWN_AFTER_MS),
            "failover-timeout": str(sentinel.FAILOVER_TIMEOUT_MS), "parallel-syncs": "1",
        }
    }  # fmt: skip
    assert sentinel.plan([monitor()], seen, auth=False) == []
    # A sentinel that lost it (restarted without its file) gets it whole, login too.
    cmds = sentinel.plan([monitor()], {}, auth=False)
    assert cmds[0][:3] == ("SENTINEL", "MONITOR", "roost-blog")
    assert "auth-pass" in cmds[1]


# ---------------------------------------------------------------- redispairs


def test_a_copys_health_names_its_role_peer_and_lag() -> None:
    master = redispairs.health_of(read_view(parse_info(MASTER_INFO)))
    assert master == redispairs.Health("master", "10.0.0.2:7001", 500, "")
    replica = redispairs.health_of(read_view(parse_info(REPLICA_INFO)))
    assert replica.role == "replica" and replica.peer == "10.0.0.1:7001"
    assert replica.problem.startswith("replica: its link to the master")


def test_a_master_leaves_out_the_replica_the_sentinels_hold_down() -> None:
    """Its host dead, the replica is still online in the master's INFO (until
    repl-timeout) with no lag while nothing is written: the sentinels' view
    decides, and the problem reads the same after the master drops it."""
    view = read_view(parse_info(MASTER_INFO))
    down = frozenset({("10.0.0.2", 7001)})
    gone = redispairs.health_of(view, down)
    assert gone.role == "master" and gone.peer == "" and gone.lag_bytes == 1500
    assert gone.problem == (
        "master: no replica is up: the sentinels hold 10.0.0.2:7001 down "
        "(its writes exist on this host only)"
    )
    dropped = ReplicationView(role="master", offset=1500)  # past repl-timeout
    assert redispairs.health_of(dropped, down).problem == gone.problem
    # Another replica down does not hide the one streaming.
    other = redispairs.health_of(view, frozenset({("10.0.0.3", 7001)}))
    assert other == redispairs.Health("master", "10.0.0.2:7001", 500, "")


def test_the_sentinels_are_on_every_servicehost_and_controller_host(tmp_path: Path) -> None:
    def ep(host: str) -> Endpoint:
        return Endpoint(f"tcp://{host}:5000", "k")

    book = ClusterConfig(
        endpoints={
            "servicehost": [ep("10.0.0.1"), ep("10.0.0.2")],
            "controller": [ep("10.0.0.3"), ep("10.0.0.1")],
            "runner": [ep("10.0.0.9")],
        }
    )
    assert redispairs.sentinel_hosts(book) == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    # No sentinel key: one machine, no pairs.
    assert redispairs.load_config(tmp_path, book, 26379) is None
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / redispairs.SENTINEL_KEY).write_text("pw\n")
    config = redispairs.load_config(tmp_path, book, 26379)
    assert config is not None and config.password == "pw"
    assert config.sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26379), ("10.0.0.3", 26379))


def test_the_partners_copy_is_the_same_server_recorded_as_a_replica() -> None:
    copy = RedisCopy(
        port=7001, memory_mb=32, password="a", admin_password="b", backup_password="c",
        replica_password="d", master_host="10.0.0.1",
    )  # fmt: skip
    svc = redispairs.RedisPairs.from_copy("blog", copy)
    assert (svc.port, svc.memory_mb, svc.password, svc.admin_password) == (7001, 32, "a", "b")
    assert (svc.backup_password, svc.replica_password, svc.replica_of) == ("c", "d", "10.0.0.1")


def replica_entry(
    ip: str = "10.0.0.2", port: int = 7001, flags: str = "slave", link: str = "ok"
) -> list[str]:
    """One replica as SENTINEL REPLICAS lists it (Redis 7.0, every field,
    in its order; s-down-time appears once it is s_down)."""
    fields = {
        "name": f"{ip}:{port}", "ip": ip, "port": str(port),
        "runid": "576f70826dbcd93a86cab7ba5f081533d0e4bdf6", "flags": flags,
        "link-pending-commands": "0", "link-refcount": "1", "last-ping-sent": "0",
        "last-ok-ping-reply": "489", "last-ping-reply": "489",
        **({"s-down-time": "2474"} if "s_down" in flags else {}),
        "down-after-milliseconds": "3000", "info-refresh": "6701", "role-reported": "slave",
        "role-reported-time": "12011", "master-link-down-time": "0",
        "master-link-status": link, "master-host": "10.0.0.1", "master-port": str(port),
        "slave-priority": "100", "slave-repl-offset": "277", "replica-announced": "1",
    }  # fmt: skip
    return [x for kv in fields.items() for x in kv]


def seen(others: int = 2, *replicas: list[str]) -> sentinel.MasterSeen:
    fields = {"name": "roost-blog", "flags": "master", "num-slaves": str(len(replicas)),
              "num-other-sentinels": str(others)}  # fmt: skip
    return sentinel.MasterSeen(fields, sentinel.replicas_seen(list(replicas)))


def test_sentinel_replicas_reply_is_read_field_by_field() -> None:
    (r,) = sentinel.replicas_seen([replica_entry(flags="s_down,slave,disconnected")])
    assert (r["name"], r["ip"], r["port"], r["flags"]) == (
        "10.0.0.2:7001", "10.0.0.2", "7001", "s_down,slave,disconnected",
    )  # fmt: skip
    assert r["master-link-status"] == "ok" and r["s-down-time"] == "2474"


def test_a_replica_is_good_only_up_and_streaming_as_the_sentinels_see_it() -> None:
    (up,) = sentinel.replicas_seen([replica_entry()])
    assert sentinel.good_replica(up)
    # Its host dead: s_down after down-after-milliseconds, its last INFO
    # still saying the link is ok (seen so on Redis 7.0).
    for flags in (
        "s_down,slave",
        "s_down,slave,disconnected",
        "o_down,slave",
        "slave,disconnected",
    ):
        (r,) = sentinel.replicas_seen([replica_entry(flags=flags)])
        assert not sentinel.good_replica(r), flags
    (cut,) = sentinel.replicas_seen([replica_entry(link="err")])
    assert not sentinel.good_replica(cut)
    assert not sentinel.good_replica({})


def test_the_replicas_the_sentinels_hold_down_by_address() -> None:
    replies = sentinel.replicas_seen(
        [replica_entry(), replica_entry("10.0.0.3", flags="s_down,slave"),
         replica_entry("10.0.0.4", link="err")]
    )  # fmt: skip
    assert sentinel.replicas_down(replies) == {("10.0.0.3", 7001)}
    assert sentinel.replicas_down([]) == frozenset()


def test_a_master_the_sentinels_cannot_fail_over_is_a_problem() -> None:
    ready = seen(2, replica_entry())
    assert sentinel.failover_problem(ready, 3) == ""
    assert "know no replica" in sentinel.failover_problem(seen(2), 3)
    lone = sentinel.failover_problem(seen(1, replica_entry()), 3)
    assert lone == "only 2 of 3 sentinels watch it"
    assert sentinel.failover_problem(sentinel.MasterSeen({}), 3) == "the sentinels do not watch it"


def test_a_master_whose_only_replica_is_down_cannot_fail_over() -> None:
    """SENTINEL MASTER's num-slaves counts a replica the sentinels hold down
    (seen: 1 with the replica's host powered off); it is no replica to
    promote."""
    dead = seen(2, replica_entry(flags="s_down,slave,disconnected"))
    assert dead.fields["num-slaves"] == "1"
    assert sentinel.failover_problem(dead, 3) == (
        "the sentinels know no replica of it fit to take over (10.0.0.2:7001)"
    )
    syncing = seen(2, replica_entry(link="err"))
    assert "fit to take over" in sentinel.failover_problem(syncing, 3)
    # One good of two is enough.
    either = seen(2, replica_entry(flags="s_down,slave"), replica_entry("10.0.0.3"))
    assert sentinel.failover_problem(either, 3) == ""


def test_a_master_another_sentinel_knows_no_replica_of_is_a_problem() -> None:
    """The sentinel leading a failover may be another host's; one that has
    not read the master's INFO since the replica came aborts it."""
    ready = seen(2, replica_entry())
    whole = {"10.0.0.1": ready, "10.0.0.2": ready, "10.0.0.3": None}  # one does not answer
    assert sentinel.pair_failover_problem(whole, 3) == ""
    assert sentinel.pair_failover_problem({**whole, "10.0.0.2": seen(2)}, 3) == (
        "the sentinels know no replica of it yet: it cannot fail over (the sentinel on 10.0.0.2)"
    )
    assert "(the sentinel on 10.0.0.3)" in sentinel.pair_failover_problem(
        {**whole, "10.0.0.3": sentinel.MasterSeen({})}, 3
    )
    down = {**whole, "10.0.0.1": seen(2, replica_entry(flags="s_down,slave"))}
    assert "fit to take over (10.0.0.2:7001) (the sentinel on 10.0.0.1)" in (
        sentinel.pair_failover_problem(down, 3)
    )


def test_a_pairs_copies_are_metrics_and_a_lone_redis_is_none() -> None:
    def redis(app: str, role: str = "", lag: int = 0, problem: str = "") -> ServerStatus:
        return ServerStatus(
            app=app, kind="redis", state="up", redis_role=role, redis_lag_bytes=lag,
            redis_problem=problem,
        )  # fmt: skip

    status = ServiceHostStatus(
        servers=[redis("a", "master", 42), redis("b", "replica", problem="link down"), redis("c")]
    )
    metrics.record(status)

    def value(name: str, app: str) -> float | None:
        return REGISTRY.get_sample_value(name, {"app": app})

    assert value("roost_redis_master", "a") == 1.0
    assert value("roost_redis_replica_lag_bytes", "a") == 42.0
    assert value("roost_redis_replication_problem", "a") == 0.0
    assert value("roost_redis_master", "b") == 0.0
    assert value("roost_redis_replication_problem", "b") == 1.0
    assert value("roost_redis_master", "c") is None  # alone: not a pair
    metrics.record(ServiceHostStatus(servers=[]))
    assert value("roost_redis_master", "a") is None  # removed: gone
