"""The authorization table and identity files, as pure functions."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from roost.appspec.model import AppSpec
from roost.wire.authz import NOT_REQUESTS, SENDERS, publishers_of, readers_of_any, refusal
from roost.wire.identity import (
    ROLES,
    Identity,
    PeerError,
    ensure_member,
    identity,
    load_peers,
    parse_peers,
    save_peers,
)
from roost.wire.keys import generate_keypair
from roost.wire.messages import (
    AnyMsg,
    BuildEnvRequest,
    BuildResult,
    DataPull,
    Heartbeat,
    HeartbeatReply,
    ImageChunkRequest,
    ImageRetainRequest,
    Ok,
    Ping,
    RouteSnapshotRequest,
    RunStart,
    ServiceBackup,
    ServiceDeprovision,
    ServiceHostStatus,
    ServiceProvision,
    SshAuth,
)

RUNNER_A = Identity("runner", "10.0.0.21")
KEY_A = "A" * 40


def test_every_message_type_is_a_request_of_some_roles_or_never_one() -> None:
    every = set(typing.get_args(AnyMsg))
    assert set(SENDERS) | NOT_REQUESTS == every, (
        "a new message type needs its senders in roost.wire.authz.SENDERS "
        "(or a place in NOT_REQUESTS)"
    )
    assert not set(SENDERS) & NOT_REQUESTS
    assert all(roles and roles <= set(ROLES) for roles in SENDERS.values())


@pytest.mark.parametrize(
    ("msg", "allowed", "refused"),
    [
        (ServiceDeprovision(app="a", kind="postgres"), "controller", "runner"),
        (ServiceProvision(app="a", kind="redis"), "controller", "gateway"),
        (ServiceBackup(app="a", kind="redis"), "controller", "router"),
        (RunStart(session="s", assignment=None), "gateway", "runner"),  # type: ignore[arg-type]
        (BuildResult(build_id="b", app="a", ok=True), "builder", "runner"),
        (BuildEnvRequest(build_id="b", spec=AppSpec()), "builder", "runner"),
        (SshAuth(fingerprint="f"), "gateway", "controller"),
        (ImageChunkRequest(digest="sha256:x"), "router", "gateway"),
        (RouteSnapshotRequest(), "router", "runner"),
        (DataPull(app="a"), "runner", "router"),
    ],
)
def test_roles_decide(msg: object, allowed: str, refused: str) -> None:
    assert refusal(msg, Identity(allowed, "h"), KEY_A) is None  # type: ignore[arg-type]
    why = refusal(msg, Identity(refused, "h"), KEY_A)  # type: ignore[arg-type]
    assert why is not None and f"a {refused} (" in why and type(msg).__name__ in why


def test_replies_and_unknown_types_are_never_requests() -> None:
    for who in ROLES:
        assert refusal(Ok(), Identity(who, "h"), KEY_A) is not None
        assert refusal(HeartbeatReply(), Identity(who, "h"), KEY_A) is not None
    assert refusal(Ping(), Identity("runner", "h"), KEY_A) is None


def test_a_runner_speaks_only_for_its_own_host() -> None:
    own = Heartbeat(host_id="10.0.0.21", hostname="a", rpc_key=KEY_A)
    assert refusal(own, RUNNER_A, KEY_A) is None
    other = Heartbeat(host_id="10.0.0.22", hostname="b")
    why = refusal(other, RUNNER_A, KEY_A)
    assert why is not None and "10.0.0.22" in why
    # Nor may it send its heartbeat pointing others at another key's endpoint.
    assert refusal(Heartbeat(host_id="10.0.0.21", hostname="a", rpc_key="B" * 40), RUNNER_A, KEY_A)
    retain = ImageRetainRequest(host_id="10.0.0.22", held=[])
    assert refusal(retain, RUNNER_A, KEY_A) is not None
    assert refusal(ImageRetainRequest(host_id="10.0.0.21"), RUNNER_A, KEY_A) is None


def test_a_servicehost_reports_as_itself_only() -> None:
    # Controllers place apps' data and address requests by this id.
    svc = Identity("servicehost", "10.0.0.41")
    assert refusal(ServiceHostStatus(host="servicehost", host_id="10.0.0.41"), svc, KEY_A) is None
    assert refusal(ServiceHostStatus(host="servicehost"), svc, KEY_A) is None  # an older one
    why = refusal(ServiceHostStatus(host="servicehost", host_id="10.0.0.42"), svc, KEY_A)
    assert why is not None and "10.0.0.42" in why


def test_a_builder_asks_which_images_to_keep_as_a_builder_only() -> None:
    builder = Identity("builder", "10.0.0.21")
    assert refusal(ImageRetainRequest(host_id="10.0.0.21", builder=True), builder, KEY_A) is None
    # As a runner it would have the controller forget a same-named runner's copies.
    assert refusal(ImageRetainRequest(host_id="10.0.0.21"), builder, KEY_A) is not None
    assert refusal(ImageRetainRequest(host_id="10.0.0.21", builder=True), RUNNER_A, KEY_A)
    assert refusal(ImageRetainRequest(host_id="10.0.0.9", builder=True), builder, KEY_A)


def test_only_a_controller_sends_a_fenced_run() -> None:
    fenced = RunStart(session="s", assignment=None, fence=7)  # type: ignore[arg-type]
    assert refusal(fenced, Identity("controller", "h"), KEY_A) is None
    why = refusal(fenced, Identity("gateway", "h"), KEY_A)
    assert why is not None and "fenced RunStart" in why
    plain = RunStart(session="s", assignment=None)  # type: ignore[arg-type]
    assert refusal(plain, Identity("gateway", "h"), KEY_A) is None


def test_route_tables_go_from_controllers_to_routers_only() -> None:
    assert readers_of_any() == {"router"}
    assert publishers_of(["routes"]) == {"controller"}
    assert publishers_of(["routes", "no-such-topic"]) == frozenset()


def test_peers_file_round_trips_and_refuses_what_it_cannot_trust(tmp_path: Path) -> None:
    a, b = generate_keypair(), generate_keypair()
    peers = {a.public: identity("runner", "10.0.0.21"), b.public: identity("controller", "c1")}
    save_peers(tmp_path, peers)
    assert load_peers(tmp_path) == peers
    assert load_peers(tmp_path / "nowhere") == {}
    with pytest.raises(PeerError, match="two keys claim"):
        save_peers(tmp_path, {a.public: RUNNER_A, b.public: RUNNER_A})
    with pytest.raises(PeerError, match="unknown role"):
        identity("tenant", "h")
    with pytest.raises(PeerError, match="bad host"):
        identity("runner", "a b")
    bad = b'{"peers": [{"key": "%s", "role": "root", "host": "h"}]}' % a.public
    with pytest.raises(PeerError, match="unknown role"):
        parse_peers(bad)
    twice = b'{"peers": [%s, %s]}' % (
        (b'{"key": "%s", "role": "runner", "host": "h"}' % a.public,) * 2
    )
    with pytest.raises(PeerError, match="listed twice"):
        parse_peers(twice)
    with pytest.raises(PeerError, match="CURVE"):
        parse_peers(b'{"peers": [{"key": "short", "role": "runner", "host": "h"}]}')


def test_ensure_member_makes_a_key_once_and_lists_it(tmp_path: Path) -> None:
    first = ensure_member(tmp_path, "runner", RUNNER_A)
    again = ensure_member(tmp_path, "runner", RUNNER_A)
    assert first == again
    assert load_peers(tmp_path) == {first.public: RUNNER_A}
