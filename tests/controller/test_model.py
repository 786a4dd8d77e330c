"""The lease holder's model: which apps a pass must look at, and what other apps hold."""

from __future__ import annotations

from roost.controller import model
from roost.controller.desired import AppInputs, Desired
from roost.controller.model import Model
from roost.controller.scheduler import Placement, Want
from roost.controller.store import AppRow


def _inputs(app_id: int, name: str, sizes: dict[str, int] | None = None) -> AppInputs:
    row = AppRow(app_id, name, 1, False, 1, 0.0)
    return AppInputs(row=row, formation={"web": 2}, sizes=sizes or {})


def _p(app: str, idx: int, host: str) -> Placement:
    return Placement(f"{app}-web-{idx}", app, 1, "web", idx, host)


def test_dirty_apps_are_those_something_happened_to() -> None:
    m = Model(instance_memory_mb=256)
    d = Desired(version=1, full=True)
    for app_id, name, hosts in ((1, "a", ("h1", "h2")), (2, "b", ("h2", "h3")), (3, "c", ("h3",))):
        d.apps[app_id] = _inputs(app_id, name, {"web": 512} if name == "b" else None)
        d.placements[app_id] = [_p(name, i, h) for i, h in enumerate(hosts, 1)]
    assert m.absorb(d) == {"a", "b", "c"} and m.loaded
    assert m.dirty(["a-web-1"], []) == {"a"}  # an instance's state moved
    assert m.dirty([], ["h3"]) == {"b", "c"}  # a host went down or came back
    assert m.dirty(["unknown"], ["h9"]) == set()
    # c was left one copy short: it is looked at on every pass until placed.
    m.note_placed("c", [Want("c", 1, "web", 2)], m.placed["c"])
    assert m.dirty([], []) == {"c"}
    m.note_placed("c", [Want("c", 1, "web", 1)], m.placed["c"])
    assert m.dirty([], []) == set()
    # What the others hold: b's 512 MB instances count at their size.
    reserved, count = m.others(["a"])
    assert (reserved["h2"], count["h2"], reserved["h1"], count["h1"]) == (512, 1, 0, 0)
    assert (m.reserved["h2"], m.count["h2"]) == (768, 2)
    # A read saying b is gone: its placements leave every index.
    assert m.absorb(Desired(version=2, full=False, apps={2: None})) == {"b"}
    assert "b" not in m.apps and "b-web-1" not in m.by_id and m.reserved["h3"] == 256


def test_a_read_absorbed_in_parts_is_the_read_absorbed_at_once() -> None:
    def read(full: bool, names: str, deleted: tuple[int, ...] = ()) -> Desired:
        d = Desired(version=1, full=full)
        for app_id, name in enumerate(names, 1):
            d.apps[app_id] = _inputs(app_id, name)
            d.placements[app_id] = [_p(name, 1, f"h{app_id % 3}"), _p(name, 2, "h9")]
        for app_id in deleted:
            d.apps[app_id] = None
        return d

    def state(m: Model) -> tuple[object, ...]:
        return (m.apps, m.names, m.placed, m.by_id, m.on_host, +m.reserved, +m.count, m.loaded)

    whole, stepped = Model(256), Model(256)
    for d in (read(True, "xyz"), read(True, "abcdefg"), read(False, "ABCDE", deleted=(6, 7))):
        parts = model.parts(d, 3)
        # The first part alone starts the model afresh; each holds at most 3 apps.
        assert [p.full for p in parts] == [d.full] + [False] * (len(parts) - 1)
        assert [len(p.apps) for p in parts] == [3, 3, 1][: len(parts)]
        changed: set[str] = set()
        for p in parts:
            changed |= stepped.absorb(p)
        assert changed == whole.absorb(d)
        assert state(stepped) == state(whole)
    assert "f" not in whole.apps and set(whole.apps) == {"A", "B", "C", "D", "E"}
