"""The builder's own table, for real, in network namespaces the test makes
(tests/firewall_lab.py): build uids reach no platform port
on the builder host, but do reach the rest (a package index); app uids and
the platform's own processes are not the builder's business."""

from __future__ import annotations

import pytest
from tests import firewall_lab
from tests.firewall_lab import APP7, BUILD7, Lab, nft_in, outcomes

from roost.builder.firewall import TABLE, BuilderFirewall, BuilderFirewallError
from roost.settings import Settings
from roost.tenant.nft import Nft
from roost.wire.cluster import ClusterConfig, Endpoint

# firewall_lab's fixtures, found by pytest among this module's names.
lab = firewall_lab.lab

ON = Settings(firewall="on")


async def test_build_code_reaches_the_internet_but_no_platform_port(lab: Lab) -> None:
    builder, index = lab.netns(), lab.netns()
    lab.link(builder, index, ["10.88.0.1/24"], ["10.88.0.2/24"])
    lab.listen(builder, "127.0.0.1:7100", "10.88.0.1:7200", "[::1]:7100")  # daemons here
    lab.listen(index, "10.88.0.2:443")  # a package index, out there
    attacks = [
        (BUILD7, "127.0.0.1", 7100),
        (BUILD7, "10.88.0.1", 7200),
        (BUILD7, "::1", 7100),
    ]
    fine = [(BUILD7, "10.88.0.2", 443), (0, "127.0.0.1", 7100), (APP7, "127.0.0.1", 7100)]
    assert await outcomes(builder, attacks + fine) == ["ok"] * 6  # open before the table

    cluster = ClusterConfig(endpoints={"controller": [Endpoint("tcp://127.0.0.1:7100", "k")]})
    fw = await BuilderFirewall.start(
        ON, cluster, [("builder", "10.88.0.1")], nft_argv=nft_in(builder)
    )
    try:
        assert await outcomes(builder, attacks) == ["refused"] * 3
        # The internet stays open to builds; root and app uids are not this table's.
        assert await outcomes(builder, fine) == ["ok"] * 3
    finally:
        await fw.close()
    assert await Nft(nft_in(builder)).comment(TABLE) is None
    assert await outcomes(builder, attacks) == ["ok"] * 3


async def test_without_nft_the_builder_refuses_to_start(lab: Lab) -> None:
    with pytest.raises(BuilderFirewallError, match="ROOST_FIREWALL=off"):
        await BuilderFirewall.start(ON, ClusterConfig(), [], nft_argv=["/nonexistent/nft"])
    off = await BuilderFirewall.start(Settings(firewall="off"), ClusterConfig(), [])
    assert off.nft is None
    await off.close()
