"""Issue 16: a standby that comes back after a long absence is made a
replica again, even when the primary no longer has the WAL it needs.

The pair of tests/cluster/pgpair.py (real etcd, Patroni, PostgreSQL). The
standby's Patroni and PostgreSQL are killed (its host, and its etcd member,
stay); its member key expires, the primary drops its replication slot, and
the app goes on writing while the primary switches and recycles WAL until
the segment the standby stopped in is gone. Its member started again, it is
a streaming, synchronous standby again holding every acknowledged write:
made again by its member's watch (servicehost/pgrejoin.py), since Patroni
3.0 leaves it asking for the removed segment for ever.
"""

from __future__ import annotations

import threading

import psycopg

from tests.cluster.cluster import wait_for
from tests.cluster.harness import Host, Network
from tests.cluster.pgpair import PACE_S, AppWriter, PairKit, kill_member, slots, start_member


def superuser(kit: PairKit, host: Host) -> str:
    plan = kit.plan
    return f"postgresql://postgres:{plan.superuser_password}@{host.ip}:{plan.pg_port}/postgres"


def wal_files(kit: PairKit, host: Host) -> set[str]:
    with psycopg.connect(superuser(kit, host), connect_timeout=5) as c:
        return {str(r[0]) for r in c.execute("SELECT name FROM pg_ls_waldir()")}


def churn(kit: PairKit, host: Host, rounds: int) -> None:
    """Switch to a new WAL segment and checkpoint, `rounds` times: the
    primary removes or recycles the segments no slot or setting keeps."""
    with psycopg.connect(superuser(kit, host), autocommit=True, connect_timeout=5) as c:
        for _ in range(rounds):
            c.execute("SELECT pg_switch_wal()")
            c.execute("CHECKPOINT")


# How long a member's watch lets it sit without streaming before it makes it
# again: 60 s by default, short here so that the test waits less for it.
STUCK_AFTER_S = 10


def test_a_standby_back_after_its_wal_is_gone_is_made_again(network: Network) -> None:
    kit = PairKit(network)
    kit.member_env["ROOST_PAIR_STUCK_AFTER_S"] = str(STUCK_AFTER_S)
    kit.start()
    primary = wait_for(kit.primary, 30, "Patroni to name the primary")
    standby = kit.other(primary)
    writer = AppWriter(kit.app_url(), pause_s=PACE_S)
    thread = threading.Thread(target=writer.run)
    thread.start()
    try:
        wait_for(lambda: len(writer.acked) >= 100, 60, "writes before the absence")
        # The WAL segment the standby has received up to (named on the
        # primary: a standby in recovery names none).
        with psycopg.connect(superuser(kit, standby), connect_timeout=5) as c:
            lsn = c.execute("SELECT pg_last_wal_receive_lsn()::text").fetchone()
        with psycopg.connect(superuser(kit, primary), connect_timeout=5) as c:
            row = c.execute(
                "SELECT pg_walfile_name(%s::pg_lsn)", (lsn[0] if lsn else "",)
            ).fetchone()
        assert row is not None
        needed = str(row[0])
        kill_member(network, standby)
        slot = standby.ip.replace(".", "_")
        wait_for(lambda: slot not in slots(kit, primary), 60, "the absent standby's slot dropped")

        def gone() -> bool:
            churn(kit, primary, 5)
            return needed not in wal_files(kit, primary)

        wait_for(gone, 120, f"the primary to have removed WAL segment {needed}")
        n = len(writer.acked)
        wait_for(lambda: len(writer.acked) >= n + 100, 60, "writes while it is away")

        said_before = kit.log(standby, "pgpair").stat().st_size
        start_member(kit, standby)

        def whole() -> bool:
            v = kit.view(primary)
            s = v.synchronous if v is not None else None
            return s is not None and s.name == standby.ip and s.state in ("streaming", "running")

        try:
            wait_for(whole, 180, "the standby to be a synchronous, streaming standby again")
        except AssertionError:
            print(kit.view(primary), kit.logs_tail(40))
            raise
        # Made again by its own watch (servicehost/pgrejoin.py): Patroni
        # alone leaves it asking for the removed segment for ever.
        said = kit.log(standby, "pgpair").read_bytes()[said_before:].decode(errors="replace")
        assert f"has not streamed for {STUCK_AFTER_S} s" in said, said[-3000:]
        assert "reinitializing it from the primary" in said, said[-3000:]
        n = len(writer.acked)
        wait_for(lambda: len(writer.acked) >= n + 50, 60, "writes with it back")
    finally:
        writer.stop()
        thread.join(30)
    wait_for(lambda: writer.acked_ids() <= kit.ids(kit.member_url(standby)), 60, "it catching up")
