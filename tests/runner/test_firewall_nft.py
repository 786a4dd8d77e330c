"""The firewall for real: nftables in network namespaces each test makes and deletes.

Nothing here touches the machine's own ruleset: every table is applied with
`ip netns exec NS nft`, every connection is made inside a namespace, to
addresses the test gave it. A tenant is a process that drops to an app's uid
(as the runner's sandbox does) before it connects; root plays the router.
Every attack is tried twice: before the table exists (it gets through, so
the test can fail) and after (refused).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from roost.appspec.model import AppSpec
from roost.appspec.service_env import SERVICE_ADDRESSES, with_service_addresses
from roost.proc.exits import ConfigError
from roost.runner.firewall import TABLE, RunnerFirewall, RunnerFirewallError
from roost.settings import Settings
from roost.tenant.firewall import Plan, render
from roost.tenant.nft import Nft, NftError
from roost.wire.cluster import ClusterConfig, Endpoint
from roost.wire.messages import InstanceAssignment, Msg, Ok, RunStart, ServiceCredentials
from tests import firewall_lab
from tests.firewall_lab import (
    APP7,
    APP8,
    BUILD7,
    Lab,
    attempt,
    nft_in,
    outcomes,
)

# firewall_lab's fixtures, found by pytest among this module's names.
lab = firewall_lab.lab

SETTINGS = Settings(
    firewall="on", instance_ports="20000-29999", router_port=8080, router_tls_port=0
)


async def until(pred: Callable[[], object], what: str, timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while not pred():
            await asyncio.sleep(0.05)


def assignment(app_id: int, env: dict[str, str]) -> InstanceAssignment:
    return InstanceAssignment(
        instance_id=f"app{app_id}-web-1",
        app=f"app{app_id}",
        release=1,
        image_digest="sha256:" + "0" * 64,
        process_type="web",
        spec=AppSpec(),
        env=env,
        app_id=app_id,
    )


def redis(host: str, port: int) -> ServiceCredentials:
    url = f"redis://:pw@{host}:{port}/0"
    return ServiceCredentials(app="app", kind="redis", host=host, port=port, password="pw", url=url)


async def table(ns: str) -> str | None:
    return await Nft(nft_in(ns)).comment(TABLE)


# ------------------------------------------------------------ one host


async def test_tenants_reach_no_platform_port_and_no_instance_on_this_host(lab: Lab) -> None:
    ns = lab.netns()
    lab.listen(
        ns,
        "127.0.0.1:7100",  # a ZeroMQ endpoint of the address book
        "[::1]:7100",
        "127.0.0.1:20005",  # another app's instance
        "[::1]:20005",
        "127.0.0.1:6380",  # app 7's Redis
        "127.0.0.1:6381",  # app 8's Redis
        "127.0.0.1:5432",  # PostgreSQL, which app 7 was not given
        "127.0.0.1:8080",  # the router
        "127.0.0.1:9000",  # a daemon on a port nobody listed (metrics, say)
    )
    attacks = [
        (APP7, "127.0.0.1", 7100),
        (APP7, "::1", 7100),
        (APP7, "127.0.0.1", 20005),
        (APP7, "::1", 20005),
        (APP7, "127.0.0.1", 6381),
        (APP7, "127.0.0.1", 5432),
        (APP7, "127.0.0.1", 9000),
        (APP8, "127.0.0.1", 6380),
        (BUILD7, "127.0.0.1", 7100),
    ]
    assert await outcomes(ns, attacks) == ["ok"] * len(attacks)

    cluster = ClusterConfig(endpoints={"controller": [Endpoint("tcp://127.0.0.1:7100", "k")]})
    fw = await RunnerFirewall.start(SETTINGS, cluster, [], "h1", nft_argv=nft_in(ns))
    # The config vars try to open the controller's port and PostgreSQL; the
    # platform gave app 7 its Redis only.
    config = {"REDIS_URL": "redis://127.0.0.1:7100/0", SERVICE_ADDRESSES: "127.0.0.1:5432"}
    env = with_service_addresses(config, [redis("127.0.0.1", 6380)])
    forwarded: list[list[InstanceAssignment]] = []
    keeper = asyncio.create_task(fw.run())
    try:
        fw.gate([assignment(7, env)], forwarded.append)
        await until(lambda: forwarded, "the assignment to pass the firewall")
        assert forwarded == [[assignment(7, env)]]
        assert await outcomes(ns, attacks) == ["refused"] * len(attacks)
        allowed = [
            (APP7, "127.0.0.1", 6380),  # its own service
            (APP7, "127.0.0.1", 8080),  # the router, as anyone may
            (0, "127.0.0.1", 20005),  # root: the router reaching an instance
            (0, "::1", 20005),
            (0, "127.0.0.1", 7100),  # the platform reaching itself
        ]
        assert await outcomes(ns, allowed) == ["ok"] * len(allowed)
    finally:
        keeper.cancel()
        await asyncio.wait([keeper])
        await fw.close()
    assert await table(ns) is None
    assert await outcomes(ns, attacks[:1]) == ["ok"]


async def test_a_run_session_reaches_its_services_from_its_first_instruction(lab: Lab) -> None:
    ns = lab.netns()
    lab.listen(ns, "127.0.0.1:6390")
    assert await attempt(ns, 1_900_000_009, "127.0.0.1", 6390) == "ok"
    live: set[str] = set()
    fw = await RunnerFirewall.start(
        SETTINGS, ClusterConfig(), [], "h1", nft_argv=nft_in(ns), live_session=live.__contains__
    )
    seen: list[str] = []

    async def start_session(msg: Msg) -> Msg:
        # What the session's process would do first: connect to its Redis.
        assert isinstance(msg, RunStart)
        seen.append(await attempt(ns, 1_900_000_009, "127.0.0.1", 6390))
        live.add(msg.session)
        return Ok(detail=msg.session)

    try:
        assert await attempt(ns, 1_900_000_009, "127.0.0.1", 6390) == "refused"
        env = with_service_addresses({}, [redis("127.0.0.1", 6390)])
        start = RunStart(session="s1", assignment=assignment(9, env), command="true")
        assert await fw.guard(start_session)(start) == Ok(detail="s1")
        assert seen == ["ok"]
        # Once the session is over, the next update takes its access away.
        live.clear()
        await fw.sync()
        assert await attempt(ns, 1_900_000_009, "127.0.0.1", 6390) == "refused"
    finally:
        await fw.close()


async def test_an_adopted_run_session_gets_its_services_back(lab: Lab) -> None:
    # A runner that starts after its predecessor died finds a `run` still
    # going (runner/shimsession): its allowances were in the old runner's
    # memory only, and are given again when the run is adopted.
    ns = lab.netns()
    lab.listen(ns, "127.0.0.1:6391")
    live = {"s2"}
    fw = await RunnerFirewall.start(
        SETTINGS, ClusterConfig(), [], "h1", nft_argv=nft_in(ns), live_session=live.__contains__
    )
    try:
        assert await attempt(ns, 1_900_000_009, "127.0.0.1", 6391) == "refused"
        env = with_service_addresses({}, [redis("127.0.0.1", 6391)])
        await fw.adopt_sessions({"s2": assignment(9, env)})
        assert await attempt(ns, 1_900_000_009, "127.0.0.1", 6391) == "ok"
        live.clear()  # the run ends: the next update takes its access away
        await fw.sync()
        assert await attempt(ns, 1_900_000_009, "127.0.0.1", 6391) == "refused"
    finally:
        await fw.close()


# ------------------------------------------------------------ two hosts


async def test_only_routers_reach_instance_ports_from_other_hosts(lab: Lab) -> None:
    runner, other = lab.netns(), lab.netns()
    lab.link(
        runner,
        other,
        ["10.201.0.1/24", "fd77::1/64"],
        # .2 and fd77::2: a router host (and a controller); .3 and fd77::3: neither.
        ["10.201.0.2/24", "10.201.0.3/24", "fd77::2/64", "fd77::3/64"],
    )
    lab.listen(runner, "0.0.0.0:20005", "[::]:20005", "0.0.0.0:9000")
    lab.listen(other, "0.0.0.0:7100", "0.0.0.0:8080", "0.0.0.0:9000")
    outsiders = [("10.201.0.1", "10.201.0.3"), ("fd77::1", "fd77::3")]
    routers = [("10.201.0.1", "10.201.0.2"), ("fd77::1", "fd77::2")]
    for dst, src in outsiders:
        assert await attempt(other, 0, dst, 20005, source=src) == "ok"
    tenant_attacks = [(APP7, "10.201.0.2", 7100)]
    assert await outcomes(runner, tenant_attacks) == ["ok"]

    cluster = ClusterConfig(endpoints={"controller": [Endpoint("tcp://10.201.0.2:7100", "k")]})
    members = [("router", "10.201.0.2"), ("router", "fd77::2"), ("controller", "10.201.0.2")]
    fw = await RunnerFirewall.start(SETTINGS, cluster, members, "run-1", nft_argv=nft_in(runner))
    try:
        for dst, src in outsiders:
            assert await attempt(other, 0, dst, 20005, source=src) == "refused"
        for dst, src in routers:
            assert await attempt(other, 0, dst, 20005, source=src) == "ok"
        # Only the instance range is the routers'.
        assert await attempt(other, 0, "10.201.0.1", 9000, source="10.201.0.3") == "ok"
        assert await outcomes(runner, tenant_attacks) == ["refused"]
        # The router's public port, and an address that is no platform host
        # (the internet, as far as the firewall knows), stay open to tenants.
        open_ = [(APP7, "10.201.0.2", 8080), (APP7, "10.201.0.3", 9000)]
        assert await outcomes(runner, open_) == ["ok", "ok"]
    finally:
        await fw.close()


# ------------------------------------------------------------ applying and removing


async def test_a_refused_ruleset_leaves_the_table_in_place(lab: Lab) -> None:
    ns = lab.netns()
    nft = Nft(nft_in(ns))
    await nft.apply(render(Plan(comment="first", instance_ports=(20000, 20099))))
    broken = render(Plan(comment="second")).replace("jump platform", "jump nowhere")
    with pytest.raises(NftError, match="nowhere"):
        await nft.apply(broken)
    assert await nft.comment(TABLE) == "first"


async def test_each_runner_removes_only_its_own_table(lab: Lab) -> None:
    ns = lab.netns()
    first = await RunnerFirewall.start(SETTINGS, ClusterConfig(), [], "a", nft_argv=nft_in(ns))
    second = await RunnerFirewall.start(SETTINGS, ClusterConfig(), [], "b", nft_argv=nft_in(ns))
    assert await table(ns) == second.base.comment
    await first.close()
    assert await table(ns) == second.base.comment
    await second.close()
    assert await table(ns) is None


async def test_without_nft_the_runner_refuses_to_run_tenant_code() -> None:
    with pytest.raises(RunnerFirewallError, match="ROOST_FIREWALL=off"):
        await RunnerFirewall.start(
            SETTINGS, ClusterConfig(), [], "h1", nft_argv=["/nonexistent/nft"]
        )


async def test_firewall_off_applies_nothing_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    off = Settings(firewall="off")
    fw = await RunnerFirewall.start(off, ClusterConfig(), [], "h1", nft_argv=["/nonexistent/nft"])
    assert not fw.enabled
    assert "FIREWALL OFF" in caplog.text
    forwarded: list[list[InstanceAssignment]] = []
    fw.gate([assignment(7, {})], forwarded.append)
    assert forwarded == [[assignment(7, {})]]
    # A wrong setting is a configuration error: the runner exits CONFIG_ERROR.
    with pytest.raises(ConfigError, match="'on' or 'off'"):
        await RunnerFirewall.start(Settings(firewall="maybe"), ClusterConfig(), [], "h1")
