"""Per-host assignments: versions move exactly when a host's content changes."""

from __future__ import annotations

from roost.appspec.model import AppSpec, ProcessSpec
from roost.controller.assign import AssignmentBook, AssignmentInputs
from roost.controller.scheduler import Placement

SPEC = AppSpec(
    processes={"web": ProcessSpec(name="web", kind="wsgi", entrypoint="app:app", web=True)}
)


def _p(iid: str, host: str, app: str = "a") -> Placement:
    return Placement(iid, app, 1, "web", int(iid[-1]), host)


def test_versions_bump_only_on_change_and_objects_are_reused() -> None:
    book = AssignmentBook()
    envs = {"a": {"K": "1"}, "b": {}}
    placed = [_p("a1", "h1"), _p("a2", "h2"), _p("b1", "h1", "b")]

    def src(p: Placement) -> AssignmentInputs:
        return AssignmentInputs("sha256:x", SPEC, dict(envs[p.app]))

    assert book.update(placed, src, ["h1", "h2", "h3"]) == ["h1", "h2", "h3"]
    first = {h: a for h, a in book.hosts.items()}
    assert [i.instance_id for i in first["h1"].content] == ["a1", "b1"]
    assert first["h3"].content == () and first["h3"].version == 1  # known, nothing placed
    before = [id(i) for i in first["h1"].content]

    assert book.update(placed, src, ["h1", "h2", "h3"]) == []
    assert [id(i) for i in book.hosts["h1"].content] == before  # reused, not rebuilt

    envs["b"] = {"NEW": "x"}  # b's environment changes: only h1 runs b
    assert book.update(placed, src, ["h1", "h2", "h3"]) == ["h1"]
    assert book.hosts["h1"].version == 2 and book.hosts["h2"].version == 1
    assert book.hosts["h1"].content[0] is first["h1"].content[0]  # a1 untouched

    # a2 moves from h2 to h3: both hosts get a new version, h2's is empty.
    moved = [placed[0], Placement("a3", "a", 1, "web", 2, "h3"), placed[2]]
    assert book.update(moved, src, ["h1", "h2", "h3"]) == ["h2", "h3"]
    assert book.hosts["h2"].content == () and book.hosts["h2"].version == 2


def test_placements_without_inputs_are_left_out_and_clear_restarts_versions() -> None:
    book = AssignmentBook()
    placed = [_p("a1", "h1"), _p("g1", "h1", "gone")]

    def src(p: Placement) -> AssignmentInputs | None:
        return None if p.app == "gone" else AssignmentInputs("sha256:x", SPEC, {})

    book.update(placed, src, [])
    assert [i.instance_id for i in book.hosts["h1"].content] == ["a1"]
    book.update(placed, src, [])
    assert book.hosts["h1"].version == 1
    book.clear()
    book.update(placed, src, [])
    assert book.hosts["h1"].version == 1


def test_staged_apps_change_hosts_only_at_commit_and_only_their_hosts() -> None:
    book = AssignmentBook()

    def src(p: Placement) -> AssignmentInputs:
        return AssignmentInputs("sha256:x", SPEC, {})

    book.update([_p("a1", "h1"), _p("b1", "h2", "b")], src, ["h1", "h2", "h3"])
    versions = {h: a.version for h, a in book.hosts.items()}
    # App a moves to h3; b is not given, so h2 (b's only host) is not touched.
    book.stage(["a"], [_p("a2", "h3")], src)
    assert {h: a.version for h, a in book.hosts.items()} == versions  # nothing shown yet
    assert book.commit(["h1", "h2", "h3"]) == ["h1", "h3"]
    assert book.hosts["h1"].content == () and book.hosts["h2"].version == versions["h2"]
    assert [i.instance_id for i in book.hosts["h3"].content] == ["a2"]
    # A gone app: staged with nothing, its instances leave their hosts.
    assert book.replace(["b"], [], src, ["h1", "h2", "h3"]) == ["h2"]
    assert book.hosts["h2"].content == ()
