"""What a build's code steps see (BuildEnvRequest): the app's own config vars
and service credentials, for a build that is building, and nothing of any
other app's. A real state database; the credentials sealed as the broker
stores them."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from roost.appspec.model import AppSpec, ProcessSpec
from roost.controller.astore import AsyncStore
from roost.controller.build_env import build_environment
from roost.controller.core import Controller
from roost.controller.deployflow import Event, build_move
from roost.controller.pairproxy import PROXY_HOST
from roost.controller.secretbox import SecretBox
from roost.controller.service import ControllerService
from roost.controller.services import ServiceBroker
from roost.controller.store import Store
from roost.controller.store_pairs import PairRow
from roost.settings import Settings
from roost.state.db import make_engine
from roost.wire.messages import BuildEnv, BuildEnvRequest, Error, ServiceCredentials
from tests.migrated import migrated_sqlite

WEB = {"web": ProcessSpec(name="web", kind="wsgi", entrypoint="app:app", web=True)}


def creds(app: str, password: str) -> ServiceCredentials:
    url = f"postgres://{app}:{password}@127.0.0.1:5432/{app}"
    return ServiceCredentials(
        app=app, kind="postgres", host="127.0.0.1", port=5432, database=app,
        username=app, password=password, url=url,
    )  # fmt: skip


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Store, ControllerService]]:
    url = migrated_sqlite(tmp_path / "state.db")
    box = SecretBox(b"k" * 32)
    store = Store(make_engine(url), secrets=box)
    c = Controller(AsyncStore(store), Settings(), "test")
    c.services = ServiceBroker(c.store, box, None)  # no servicehost: nothing to provision
    owner = store.create_account("dev@example.com")
    for name, password in (("alpha", "alpha-pw-1"), ("bravo", "bravo-pw-2")):
        app = store.create_app(name, owner)
        c1 = creds(name, password)
        store.bind_service(
            app.id, "postgres", box.seal({f: getattr(c1, f) for f in c1.__struct_fields__})
        )
        store.update_config(app.id, {"SECRET_KEY": f"{name}-secret", "DEBUG": "0"})
        store.create_build(f"build-{name}", app.id)
    yield store, ControllerService(c, builders=None)
    c.store.close()


async def ask(service: ControllerService, build_id: str, **spec: object) -> object:
    return await service.handle(
        BuildEnvRequest(build_id=build_id, spec=AppSpec(processes=WEB, **spec))  # type: ignore[arg-type]
    )


async def test_a_build_gets_its_own_apps_config_and_credentials(
    world: tuple[Store, ControllerService],
) -> None:
    _, service = world
    reply = await ask(service, "build-alpha", services=["postgres"])
    assert isinstance(reply, BuildEnv) and reply.build_id == "build-alpha"
    assert reply.env["DATABASE_URL"] == "postgres://alpha:alpha-pw-1@127.0.0.1:5432/alpha"
    assert reply.env["SECRET_KEY"] == "alpha-secret"
    # Nothing of the other app, whichever variable it would hide in.
    assert not any("bravo" in v for v in reply.env.values())


async def test_no_build_but_a_building_one_opens_credentials(
    world: tuple[Store, ControllerService],
) -> None:
    store, service = world
    unknown = await ask(service, "build-charlie")
    assert isinstance(unknown, Error) and "unknown build" in unknown.message
    # A build past `building` (its deploy claimed, or ended) answers nothing.
    assert store.move_build("build-alpha", build_move("building", Event.BUILT))
    done = await ask(service, "build-alpha")
    assert isinstance(done, Error) and "not building" in done.message
    assert "alpha-pw-1" not in done.message


async def test_a_service_that_cannot_be_provisioned_fails_the_ask(
    world: tuple[Store, ControllerService],
) -> None:
    _, service = world
    reply = await ask(service, "build-bravo", services=["postgres", "redis"])
    assert isinstance(reply, Error) and "provision redis" in reply.message


async def test_an_app_on_a_pair_is_built_with_the_address_its_instances_get(
    world: tuple[Store, ControllerService],
) -> None:
    """The build's code sees the runner's data proxy address, as the app's
    instances do, not the servicehost that answered the provision: what a
    build bakes from settings (collectstatic's output, a cached URL) must
    hold where the app runs."""
    store, service = world
    pair = PairRow("pair-1", ("sh1", "sh2"), ("10.0.0.1", "10.0.0.2"), 5434, 8009, 6432)
    assert store.add_service_pair(pair)
    store.set_app_pair(store.app("alpha").id, "pair-1")
    reply = await ask(service, "build-alpha", services=["postgres"])
    assert isinstance(reply, BuildEnv)
    assert reply.env["DATABASE_URL"] == f"postgres://alpha:alpha-pw-1@{PROXY_HOST}:6432/alpha"
    assert (reply.env["PGHOST"], reply.env["PGPORT"]) == (PROXY_HOST, "6432")
    # The addresses the runner's firewall opens are not the build's.
    assert "ROOST_SERVICE_ADDRESSES" not in reply.env
    # An app on no pair keeps the servicehost's address (one machine).
    other = await ask(service, "build-bravo", services=["postgres"])
    assert isinstance(other, BuildEnv)
    assert other.env["DATABASE_URL"] == "postgres://bravo:bravo-pw-2@127.0.0.1:5432/bravo"


def test_config_vars_override_service_variables() -> None:
    env = build_environment([creds("alpha", "pw")], {"DATABASE_URL": "postgres://elsewhere/db"})
    assert env["DATABASE_URL"] == "postgres://elsewhere/db"
    assert env["PGPASSWORD"] == "pw"  # the discrete variables stay the service's
    assert build_environment([], {}) == {}
