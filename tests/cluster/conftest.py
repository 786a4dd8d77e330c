"""Fixtures for the multi-host tests: a network of namespaces, a Roost cluster on it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster.harness import Network, skip_reason
from tests.tmpfs import tmpfs_dir


def _pg_missing() -> str | None:
    from tests.pgserver import pg_bin

    try:
        pg_bin("postgres")
    except RuntimeError as exc:
        return str(exc)
    return None


@pytest.fixture(scope="session")
def netns_ok() -> None:
    reason = skip_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def cluster_ok(netns_ok: None) -> None:
    reason = _pg_missing()
    if reason:
        pytest.skip(f"the cluster's state database is PostgreSQL: {reason}")


@pytest.fixture
def network(netns_ok: None) -> Iterator[Network]:
    # Its hosts' data (Patroni pairs, etcd) on a tmpfs of its own: their
    # fsyncs, and its removal, waited behind other processes' writes on the
    # busy disk (tests/tmpfs.py).
    with tmpfs_dir("roost-net-") as base:
        net = Network(base)
        try:
            net.create()
            yield net
        finally:
            net.close()
    assert not net.leftovers(), f"left behind: {net.leftovers()}"
