"""schemathesis against the published OpenAPI spec: no request makes a 5xx."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from roost.appspec.model import AppSpec, ProcessSpec
from roost.controller.api.app import create_api
from roost.controller.astore import AsyncStore
from roost.controller.core import Controller
from roost.controller.secretbox import SecretBox
from roost.controller.service import ControllerService
from roost.controller.services import ServiceBroker
from roost.controller.store import Store
from roost.settings import Settings
from roost.state.db import make_engine
from tests.migrated import migrated_sqlite
from tests.releases import go_live


@pytest.fixture(scope="module")
def api_and_token(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, str]:
    tmp = tmp_path_factory.mktemp("fuzz")
    url = migrated_sqlite(tmp / "state.db")
    store = Store(make_engine(url))
    controller = Controller(AsyncStore(store), Settings(), "fuzz")
    controller.services = ServiceBroker(controller.store, SecretBox(b"k" * 32), None)
    owner = store.create_account("fuzz@example.com", password="fuzz-password", is_admin=True)
    token = store.issue_token(owner)
    app = store.create_app("fuzzed", owner)
    spec = AppSpec(
        processes={"web": ProcessSpec(name="web", kind="wsgi", entrypoint="app:app", web=True)}
    )
    go_live(store, app.id, store.create_release(app.id, "b", "sha256:aa", "", spec, "", "x"))
    return create_api(controller, ControllerService(controller, None)), token


def test_no_server_errors(api_and_token: tuple[object, str]) -> None:
    api, token = api_and_token
    schema = schemathesis.openapi.from_asgi("/api/openapi.json", api)
    failures: list[str] = []
    statuses: list[int] = []
    operations = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(
            max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None
        )
        def check(case: schemathesis.Case) -> None:
            headers = {} if case.path == "/control/token/" else {"Authorization": f"Bearer {token}"}
            if case.path.endswith("/logs") and isinstance(case.query, dict):
                case.query["follow"] = False  # a follow stream never ends by design
            response = case.call(headers=headers)
            statuses.append(response.status_code)
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path} -> {response.status_code}: "
                    + response.text[:200]
                )

        check()
    assert operations > 20 and len(statuses) > 200
    assert any(200 <= s < 300 for s in statuses) and any(400 <= s < 500 for s in statuses)
    assert failures == []
