"""An app on a servicehost pair connects through its runner's data proxy:
the credentials its processes get and the listeners its runners serve (pure);
the pairs of cluster.json recorded once."""

from __future__ import annotations

import pytest

from roost.appspec.service_env import SERVICE_ADDRESSES, service_environment, with_service_addresses
from roost.controller.pairproxy import PROXY_HOST, pair_rows, proxied, record_pairs
from roost.controller.store import Store
from roost.controller.store_pairs import PairRow
from roost.wire.cluster import PairEntry
from roost.wire.messages import ProxyTarget, ServiceCredentials

PAIR = PairRow("pair-1", ("10.0.0.41", "10.0.0.42"), ("10.0.0.41", "10.0.0.42"), 5434, 8009, 6432)
PG = ServiceCredentials(
    app="blog", kind="postgres", host="10.0.0.41", port=5434, database="blog",
    username="blog", password="pw1", url="postgres://blog:pw1@10.0.0.41:5434/blog",
)  # fmt: skip
REDIS = ServiceCredentials(
    app="blog", kind="redis", host="10.0.0.42", port=40001, database="0",
    password="pw2", url="redis://:pw2@10.0.0.42:40001/0",
)  # fmt: skip


def test_an_app_on_a_pair_is_given_the_proxys_address_and_its_listeners() -> None:
    creds, targets = proxied([PG, REDIS], PAIR)
    env = with_service_addresses(service_environment(creds), creds)
    assert env["DATABASE_URL"] == f"postgres://blog:pw1@{PROXY_HOST}:6432/blog"
    assert (env["POSTGRES_HOST"], env["PGPORT"]) == (PROXY_HOST, "6432")
    assert env["REDIS_URL"] == f"redis://:pw2@{PROXY_HOST}:40001/0"
    # The firewall lets the app reach exactly its two listeners, nothing of the servicehosts.
    assert env[SERVICE_ADDRESSES] == f"{PROXY_HOST}:40001 {PROXY_HOST}:6432"
    assert targets == [
        ProxyTarget(
            kind="postgres", name="pair-1", local_port=6432,
            servers=[("10.0.0.41", 5434, 8009), ("10.0.0.42", 5434, 8009)],
        ),
        ProxyTarget(
            kind="redis", name="blog", local_port=40001,
            servers=[("10.0.0.41", 40001, 40001), ("10.0.0.42", 40001, 40001)], password="pw2",
        ),
    ]  # fmt: skip


def test_an_app_on_no_pair_keeps_its_credentials_and_needs_no_listener() -> None:
    assert proxied([PG, REDIS], None) == ([PG, REDIS], [])


def test_the_pairs_of_cluster_json_are_recorded_once(store: Store) -> None:
    entries = [PairEntry(name="pair-1", hosts=["10.0.0.41", "10.0.0.42"])]
    assert record_pairs(store, entries) == ["pair-1"]
    assert record_pairs(store, entries) == []  # a restart, a second controller
    assert store.service_pairs() == [PAIR]


def test_a_pair_of_other_than_two_hosts_is_refused() -> None:
    with pytest.raises(ValueError, match="names 3 hosts"):
        pair_rows([PairEntry(name="p", hosts=["a", "b", "c"])])
