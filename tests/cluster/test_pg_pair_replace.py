"""Issue 16: after a servicehost of a pair is lost for good, a new one takes
its place and the pair is whole again (roost.servicehost.pgreplace).

The pair of tests/cluster/pgpair.py (Patroni on sh1 and sh2, etcd on sh1,
sh2 and runner1, real PostgreSQL) and a spare namespace host, sh3. The
standby's host is powered off under the app's writes; the replacement is
refused while the old one still answers, then made: sh3's member, started
with the pair's plan naming it, is bootstrapped by Patroni from the
primary, streams, and becomes the synchronous standby holding every
acknowledged write; the old member is gone from Patroni's view and its
replication slot from the primary. Then the survivor's Patroni and
PostgreSQL are killed: sh3 takes over with every acknowledged write.
"""

from __future__ import annotations

import asyncio
import threading

import pytest

from roost.servicehost.pgpair import PairError
from roost.servicehost.pgreplace import OldStillAnswers, forget_member, replace_member
from tests.cluster.cluster import wait_for
from tests.cluster.harness import Network
from tests.cluster.pgpair import PACE_S, AppWriter, PairKit, kill_member, slots, start_member


def test_a_new_servicehost_takes_a_lost_ones_place_in_the_pair(network: Network) -> None:
    kit = PairKit(network)
    spare = network.add_host("sh3")
    kit.start()
    primary = wait_for(kit.primary, 30, "Patroni to name the primary")
    lost = kit.other(primary)
    writer = AppWriter(kit.app_url(), pause_s=PACE_S)
    thread = threading.Thread(target=writer.run)
    thread.start()
    try:
        wait_for(lambda: len(writer.acked) >= 100, 60, "writes before the fault")
        # Refused while the standby answers: nothing changes.
        with pytest.raises(OldStillAnswers, match="still answers"):
            asyncio.run(replace_member(kit.plan, lost.ip, spare.ip))
        with pytest.raises(PairError, match="already"):
            asyncio.run(replace_member(kit.plan, lost.ip, primary.ip))
        assert {m.name for m in kit.view(primary).members} == {primary.ip, lost.ip}

        network.partition(lost)
        network.kill_host(lost)
        new_plan = asyncio.run(replace_member(kit.plan, lost.ip, spare.ip))
        assert sorted(new_plan.hosts) == sorted([primary.ip, spare.ip])
        assert asyncio.run(forget_member(kit.plan, lost.ip)) == 0, "already forgotten"
        kit.plan = new_plan
        kit.sh = [primary, spare]
        start_member(kit, spare)

        def whole() -> bool:
            v = kit.view(primary)
            return (
                v is not None
                and {m.name for m in v.members} == {primary.ip, spare.ip}
                and v.synchronous is not None
                and v.synchronous.name == spare.ip
                and v.synchronous.state in ("streaming", "running")
            )

        try:
            wait_for(whole, 120, "the new member to be the synchronous standby")
        except AssertionError:
            print(kit.view(primary), kit.logs_tail(40))
            raise
        n = len(writer.acked)
        wait_for(lambda: len(writer.acked) >= n + 100, 60, "writes with the new standby")
    finally:
        writer.stop()
        thread.join(30)
    # The lost member's slot is dropped: the primary keeps no WAL for it.
    # Not before its walsender ends: the partition cut its connection
    # silently, so that takes wal_sender_timeout (60 s) from the fault, which
    # the new member's copy used to outlast when it waited for a spread
    # checkpoint.
    lost_slot = lost.ip.replace(".", "_")
    wait_for(lambda: lost_slot not in slots(kit, primary), 90, "the lost member's slot dropped")
    assert spare.ip.replace(".", "_") in slots(kit, primary)
    # Redundancy is back: the new member holds every acknowledged write and
    # takes over when the survivor's PostgreSQL is lost.
    kill_member(network, primary)
    try:
        wait_for(lambda: kit.primary([spare]) is spare, 90, "the new member to take over")
    except AssertionError:
        print(kit.logs_tail(40))
        raise
    missing = writer.acked_ids() - kit.ids(kit.member_url(spare))
    assert not missing, f"acknowledged but not on the new member: {sorted(missing)[:20]}"
