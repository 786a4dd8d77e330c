"""The firewall's decisions, without nft: the rendered table, port ranges, allowances."""

from __future__ import annotations

import socket
from typing import Literal

import pytest

from roost.appspec.model import AppSpec
from roost.appspec.service_env import SERVICE_ADDRESSES, with_service_addresses
from roost.runner.firewall import (
    base_plan,
    owner_comment,
    router_hosts,
    service_endpoints,
)
from roost.runner.layout import PortAllocator
from roost.settings import Settings, parse_port_range
from roost.tenant.firewall import (
    Allowance,
    FirewallError,
    Plan,
    parse_endpoints,
    removal,
    render,
)
from roost.tenant.hosts import endpoint_host, platform_hosts
from roost.wire.cluster import ClusterConfig, Endpoint
from roost.wire.messages import InstanceAssignment, ServiceCredentials

APP7 = 1_900_000_007

GOLDEN = """\
table inet roost
delete table inet roost
table inet roost {
\tcomment "roost runner h1 pid 42"
\tset platform4 {
\t\ttype ipv4_addr
\t\tflags interval
\t\telements = { 10.0.0.0/24, 169.254.169.254 }
\t}
\tset routers4 {
\t\ttype ipv4_addr
\t\tflags interval
\t\telements = { 10.0.0.31 }
\t}
\tset services4 {
\t\ttype uid . ipv4_addr . inet_service
\t\telements = { 1900000007 . 10.0.0.20 . 5432, 1900000007 . 10.0.0.20 . 6380 }
\t}
\tset platform6 {
\t\ttype ipv6_addr
\t\tflags interval
\t\telements = { fd00::31, fd00:ec2::254 }
\t}
\tset routers6 {
\t\ttype ipv6_addr
\t\tflags interval
\t\telements = { fd00::31 }
\t}
\tset services6 {
\t\ttype uid . ipv6_addr . inet_service
\t}
\tchain output {
\t\ttype filter hook output priority filter; policy accept;
\t\tmeta skuid 1900000000-2099999999 jump tenant
\t}
\tchain tenant {
\t\tct state established,related accept
\t\tmeta skuid . ip daddr . tcp dport @services4 accept
\t\tmeta skuid . ip6 daddr . tcp dport @services6 accept
\t\tfib daddr type local jump platform
\t\tip daddr @platform4 jump platform
\t\tip6 daddr @platform6 jump platform
\t}
\tchain platform {
\t\tmeta l4proto { tcp, udp } th dport 53 accept
\t\tfib daddr type local tcp dport { 8080, 8443 } accept
\t\tip daddr @routers4 tcp dport { 8080, 8443 } accept
\t\tip6 daddr @routers6 tcp dport { 8080, 8443 } accept
\t\tmeta l4proto tcp reject with tcp reset
\t\treject with icmpx admin-prohibited
\t}
\tchain input {
\t\ttype filter hook input priority filter; policy accept;
\t\ttcp dport 20000-29999 jump instances
\t}
\tchain instances {
\t\tiif "lo" accept
\t\tct direction reply accept
\t\tip saddr @routers4 accept
\t\tip6 saddr @routers6 accept
\t\treject with tcp reset
\t}
}
"""


def golden_plan() -> Plan:
    return Plan(
        comment="roost runner h1 pid 42",
        instance_ports=(20000, 29999),
        routers=("10.0.0.31", "[fd00::31]"),
        # A host inside a listed network, and a duplicate: one element each.
        platform=("10.0.0.0/24", "10.0.0.11", "10.0.0.0/24"),
        public_ports=(8443, 8080, 8080),
        allowances=(Allowance(APP7, "10.0.0.20", 6380), Allowance(APP7, "10.0.0.20", 5432)),
    )


def test_golden_table() -> None:
    assert render(golden_plan()) == GOLDEN


def test_without_instance_ports_or_public_ports_there_is_no_input_chain_nor_port_rule() -> None:
    text = render(Plan())
    assert "hook input" not in text and "tcp dport {" not in text
    # Every tenant still reaches no platform address but for DNS.
    assert "fib daddr type local jump platform" in text
    assert "th dport 53 accept" in text


def test_one_port_range_renders_one_port() -> None:
    assert "tcp dport 20000 jump instances" in render(Plan(instance_ports=(20000, 20000)))


def test_removal_succeeds_on_an_absent_table() -> None:
    # "table" creates it when missing, so "delete" has something to delete.
    assert removal("roost") == "table inet roost\ndelete table inet roost\n"


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        (Plan(table="roost; flush ruleset"), "table name"),
        (Plan(comment='x" ; flush ruleset ; "'), "comment"),
        (Plan(comment="two\nlines"), "comment"),
        (Plan(routers=("router-1",)), "router address 'router-1'"),
        (Plan(platform=("10.0.0.0/33",)), "platform address"),
        (Plan(instance_ports=(30000, 20000)), "instance port range"),
        (Plan(instance_ports=(0, 10)), "instance port range"),
        (Plan(public_ports=(70000,)), "public port"),
        # Root's sockets, or the platform's users', are never given allowances.
        (Plan(allowances=(Allowance(0, "127.0.0.1", 5432),)), "not a tenant uid"),
        (Plan(allowances=(Allowance(APP7, "10.0.0.0/8", 5432),)), "one address"),
        (Plan(allowances=(Allowance(APP7, "db.example", 5432),)), "service address"),
        (Plan(allowances=(Allowance(APP7, "10.0.0.1", 0),)), "service port"),
    ],
)
def test_bad_plans_are_refused_with_the_reason(plan: Plan, message: str) -> None:
    with pytest.raises(FirewallError, match=message):
        render(plan)


def test_service_address_lists() -> None:
    assert parse_endpoints("10.0.0.20:6380 [fd00::20]:5432  db:5432") == [
        ("10.0.0.20", 6380),
        ("fd00::20", 5432),
        ("db", 5432),
    ]
    for bad in ("10.0.0.20", "10.0.0.20:", ":5432", "h:0", "h:65536", "h:x"):
        with pytest.raises(FirewallError, match="HOST:PORT"):
            parse_endpoints(bad)


# ------------------------------------------------------------ where the data comes from


def assignment(app_id: int, env: dict[str, str], app: str = "shop") -> InstanceAssignment:
    return InstanceAssignment(
        instance_id=f"{app}-web-1",
        app=app,
        release=1,
        image_digest="sha256:" + "0" * 64,
        process_type="web",
        spec=AppSpec(),
        env=env,
        app_id=app_id,
    )


def creds(kind: Literal["postgres", "redis"], host: str, port: int) -> ServiceCredentials:
    url = f"{kind}://{host}:{port}"
    return ServiceCredentials(app="shop", kind=kind, host=host, port=port, password="pw", url=url)


def test_allowances_come_from_the_platforms_service_addresses() -> None:
    env = with_service_addresses(
        {"REDIS_URL": "redis://:pw@10.0.0.20:6380/0"},
        [creds("redis", "10.0.0.20", 6380), creds("postgres", "fd00::20", 5432)],
    )
    assert env[SERVICE_ADDRESSES] == "10.0.0.20:6380 [fd00::20]:5432"
    assert service_endpoints([assignment(7, env)]) == {
        APP7: {("10.0.0.20", 6380), ("fd00::20", 5432)}
    }


def test_a_config_var_cannot_open_a_platform_port() -> None:
    """The attack: `roost config set REDIS_URL=redis://127.0.0.1:7100` (the
    controller's port) or ROOST_SERVICE_ADDRESSES itself. Config vars are
    merged over the services' variables, so neither may be what the firewall
    reads; the controller sets the addresses last, from the credentials."""
    config = {"REDIS_URL": "redis://127.0.0.1:7100/0", SERVICE_ADDRESSES: "127.0.0.1:7100"}
    no_services = with_service_addresses(dict(config), [])
    assert SERVICE_ADDRESSES not in no_services
    assert service_endpoints([assignment(7, no_services)]) == {}
    with_redis = with_service_addresses(dict(config), [creds("redis", "127.0.0.1", 6380)])
    assert service_endpoints([assignment(7, with_redis)]) == {APP7: {("127.0.0.1", 6380)}}


def test_assignments_without_an_app_id_or_a_readable_list_get_nothing() -> None:
    assert service_endpoints([assignment(0, {SERVICE_ADDRESSES: "127.0.0.1:6380"})]) == {}
    assert service_endpoints([assignment(7, {SERVICE_ADDRESSES: "127.0.0.1"})]) == {}


def test_platform_and_router_hosts() -> None:
    cluster = ClusterConfig(
        endpoints={
            "controller": [
                Endpoint("tcp://10.0.0.11:7100", "k"),
                Endpoint("tcp://[fd00::12]:7100", "k"),
            ],
            "servicehost": [
                Endpoint("tcp://*:7120", "k"),
                Endpoint("tcp://eth0;10.0.0.20:7120", "k"),
            ],
        }
    )
    members = [("router", "10.0.0.31"), ("runner", "10.0.0.21"), ("router", "run-1")]
    assert platform_hosts(cluster, members, own_host="run-1") == [
        "10.0.0.11",
        "10.0.0.20",
        "10.0.0.21",
        "10.0.0.31",
        "fd00::12",
    ]
    # On one host every member is this host: its router is local (`iif lo`).
    assert router_hosts(members, own_host="run-1") == ["10.0.0.31"]
    assert endpoint_host("tcp://[::1]:5555") == "::1"


def test_base_plan_follows_the_settings() -> None:
    settings = Settings(instance_ports="21000-21099", router_port=80, router_tls_port=0)
    plan = base_plan(settings, owner_comment('h"1 x', 42))
    assert plan.instance_ports == (21000, 21099)
    assert plan.public_ports == (80,)
    assert plan.comment == "roost runner h_1_x pid 42"
    render(plan)  # a host id cannot break the table's syntax


# ------------------------------------------------------------ the port range


def test_port_ranges() -> None:
    assert parse_port_range("20000-29999") == range(20000, 30000)
    assert parse_port_range(" 8000 ") == range(8000, 8001)
    for bad in ("", "x-y", "20000-", "29999-20000", "0-10", "60000-70000"):
        with pytest.raises(ValueError, match="port range"):
            parse_port_range(bad)


def free_block(n: int) -> range:
    """n consecutive ports nothing listens on (the test binds them to check)."""
    for first in range(21000, 29000, 97):
        block = range(first, first + n)
        socks = []
        try:
            for port in block:
                s = socket.socket()
                socks.append(s)
                s.bind(("", port))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return block
    raise AssertionError("no free block of ports")


def test_ports_come_from_the_range_and_skip_taken_ones() -> None:
    block = free_block(4)
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("", block[1]))
        taken.listen()
        ports = PortAllocator(ports=block, start=0)
        assert [ports.allocate() for _ in range(3)] == [block[0], block[2], block[3]]
        with pytest.raises(RuntimeError, match=f"no free TCP port in {block[0]}-{block[3]}"):
            ports.allocate()


def test_a_released_port_is_not_handed_out_again_at_once() -> None:
    # A router may still send the old instance's traffic there for a moment.
    block = free_block(3)
    ports = PortAllocator(ports=block, start=0)
    first = ports.allocate()
    ports.release(first)
    assert [ports.allocate(), ports.allocate(), ports.allocate()] == [block[1], block[2], first]


def test_default_range_is_the_settings() -> None:
    ports = PortAllocator()
    assert ports.ports == parse_port_range(Settings().instance_ports)
    assert ports.allocate() in ports.ports
