"""`roost servicehost replace OLD NEW`: what is refused before anything
changes (controller/replace.plan, pure), and the records it changes (real
SQLite)."""

from __future__ import annotations

import pytest

from roost.controller.replace import ReplaceRefused, plan
from roost.controller.servicehosts import endpoint_host
from roost.controller.store import Store
from roost.controller.store_pairs import PairRow
from tests.controller.replacekit import ADDRESSES, P1, P2, reports


def test_the_lost_ones_pairs_get_the_new_one_from_their_surviving_member() -> None:
    changes = plan("sh1", "sh5", reports("sh2", "sh3", "sh4", "sh5"), ADDRESSES, [P1, P2])
    assert len(changes) == 1
    ch = changes[0]
    assert (ch.before, ch.survivor, ch.old_address, ch.new_address) == (
        P1, "sh2", "10.0.0.1", "10.0.0.5",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("old", "new", "answering", "serving", "status", "error"),
    [
        ("sh1", "sh1", ("sh2",), {}, 422, "cannot replace itself"),
        ("sh1", "sh5", ("sh1", "sh2", "sh5"), {}, 409, "sh1 still answers"),
        ("sh1", "sh5", ("sh2",), {}, 404, "no servicehost answers as sh5"),
        ("sh1", "sh3", ("sh2", "sh3"), {}, 409, "sh3 is already in pair p2"),
        ("sh1", "sh5", ("sh2", "sh5"), {"sh5": ["blog"]}, 409, "holds services of blog"),
        ("sh9", "sh5", ("sh2", "sh5"), {}, 404, "sh9 is in no pair"),
        ("sh1", "sh5", ("sh5",), {}, 503, "its other servicehost sh2 does not answer either"),
    ],
)
def test_what_cannot_be_replaced_is_refused(
    old: str,
    new: str,
    answering: tuple[str, ...],
    serving: dict[str, list[str]],
    status: int,
    error: str,
) -> None:
    with pytest.raises(ReplaceRefused, match=error) as info:
        plan(old, new, reports(*answering, serving=serving), ADDRESSES, [P1, P2])
    assert info.value.status == status


def test_an_endpoints_host() -> None:
    assert endpoint_host("tcp://10.0.0.4:7010") == "10.0.0.4"
    assert endpoint_host("tcp://[fd00::4]:7010") == "fd00::4"


def test_the_records_name_the_new_one_and_bindings_follow(store: Store) -> None:
    store.add_service_pair(P1)
    store.add_service_pair(P2)
    owner = store.create_account("o@example.com")
    app = store.create_app("blog", owner).id
    other = store.create_app("shop", owner).id
    store.bind_service(app, "redis", "sealed", "sh1")
    store.bind_service(other, "redis", "sealed", "sh3")
    before = store.desired_version()
    assert store.replace_pair_member("p1", "sh1", "sh5", "10.0.0.5", "sh2")
    assert store.service_pairs() == [
        PairRow("p1", ("sh5", "sh2"), ("10.0.0.5", "10.0.0.2"), 5434, 8009, 6001),
        P2,
    ]
    held = {r.app_id: r.host for r in store.service_bindings(None)}
    assert held == {app: "sh2", other: "sh3"}, "what sh1 held is the survivor's now"
    assert store.desired_version() > before, "every controller reads the pairs again"
    # A repeat changes nothing.
    assert not store.replace_pair_member("p1", "sh1", "sh5", "10.0.0.5", "sh2")
    assert store.service_pairs()[0].hosts == ("sh5", "sh2")


def test_the_replaced_one_is_retired_once(store: Store) -> None:
    store.add_service_pair(P1)
    assert store.retired_servicehosts() == []
    assert store.replace_pair_member("p1", "sh1", "sh5", "10.0.0.5", "sh2", "10.0.0.1")
    (row,) = store.retired_servicehosts()
    assert (row.host, row.address, row.replaced_by) == ("sh1", "10.0.0.1", "sh5")
    # A repeat (the command run again to finish) records nothing more.
    assert not store.replace_pair_member("p1", "sh1", "sh5", "10.0.0.5", "sh2", "10.0.0.1")
    assert store.retired_servicehosts() == [row]
