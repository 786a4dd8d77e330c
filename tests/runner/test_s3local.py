"""A cluster bucket's endpoint on the runner's own host (runner/s3local.py):
the placeholder the servicehost gives every app replaced, in the endpoint
variables, bundle_config and the firewall's allowances; nothing else (pure)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec

from roost.appspec.bundle_config import from_environment
from roost.appspec.model import AppSpec
from roost.appspec.service_env import (
    SERVICE_ADDRESSES,
    service_environment,
    with_service_addresses,
)
from roost.datadir import weedplan
from roost.datadir.seaweed import Endpoint
from roost.runner.archive import AppDirs
from roost.runner.firewall import service_endpoints
from roost.runner.layout import Layout
from roost.runner.rpcserver import RunnerRpc
from roost.runner.s3local import LocalS3, localized_env, own_gateway
from roost.sessions.server import ExecSessions
from roost.tenant.identity import identity_for
from roost.wire.messages import (
    RUNNER_S3_HOST,
    InstanceAssignment,
    Msg,
    Ok,
    RunStart,
    ServiceCredentials,
)

URL = f"http://{RUNNER_S3_HOST}:7154"


def bucket(url: str = URL, host: str = RUNNER_S3_HOST) -> ServiceCredentials:
    return ServiceCredentials(
        app="shop", kind="s3", host=host, port=7154, database="shop",
        username="SHOPKEY0123456789AB", password="secret-0123456789", url=url,
    )  # fmt: skip


def env_for(*creds: ServiceCredentials, config: dict[str, str] | None = None) -> dict[str, str]:
    """As the controller builds it (controller/core.instance_env)."""
    env = service_environment(creds)
    env.update(config or {})
    return with_service_addresses(env, creds)


def assignment(env: dict[str, str]) -> InstanceAssignment:
    return InstanceAssignment(
        instance_id="shop-web-1", app="shop", release=1, image_digest="sha256:" + "0" * 64,
        process_type="web", spec=AppSpec(), env=env, app_id=7,
    )  # fmt: skip


def test_the_placeholder_becomes_this_hosts_gateway_everywhere_an_app_reads_it() -> None:
    pg = ServiceCredentials(
        app="shop", kind="postgres", host="10.0.0.20", port=5432, password="pw",
        url="postgres://shop:pw@10.0.0.20:5432/shop",
    )  # fmt: skip
    env = env_for(bucket(), pg)
    local = localized_env(env, "10.0.0.7")
    assert local["AWS_S3_ENDPOINT_URL"] == local["AWS_ENDPOINT_URL_S3"] == "http://10.0.0.7:7154"
    assert local[SERVICE_ADDRESSES] == "10.0.0.20:5432 10.0.0.7:7154"
    assert local["DATABASE_URL"] == env["DATABASE_URL"]  # nothing else changes
    config = from_environment(local, data_directory="/data", version=1)
    assert config["s3"]["endpoint_url"] == "http://10.0.0.7:7154"
    # The firewall lets the app reach its own host's gateway port, and only it.
    uid = identity_for(7, "shop").uid
    assert service_endpoints([assignment(local)]) == {
        uid: {("10.0.0.20", 5432), ("10.0.0.7", 7154)}
    }
    v6 = localized_env(env, "fd00::7")
    assert v6["AWS_S3_ENDPOINT_URL"] == "http://[fd00::7]:7154"
    assert "[fd00::7]:7154" in v6[SERVICE_ADDRESSES].split()


def test_an_older_controllers_real_host_and_a_config_var_are_left_as_they_are() -> None:
    older = env_for(bucket("http://10.0.0.20:7001", "10.0.0.20"))
    assert localized_env(older, "10.0.0.7") == older
    a = assignment(older)
    assert LocalS3(Endpoint("10.0.0.7", 7154)).assignment(a) is a
    # An app's own endpoint (a config var) wins over the platform's, as
    # always, and names no placeholder: nothing is replaced, nothing opened.
    own = env_for(bucket(), config={"AWS_S3_ENDPOINT_URL": "https://s3.example.com"})
    local = localized_env(own, "10.0.0.7")
    assert local["AWS_S3_ENDPOINT_URL"] == "https://s3.example.com"
    assert local[SERVICE_ADDRESSES] == "10.0.0.7:7154"


def test_the_runners_handler_table_starts_runs_with_the_localized_environment(
    tmp_path: Path,
) -> None:
    """Through the table the runner serves (rpcserver.handlers): the
    localization comes before the firewall's guard and the start."""
    layout = Layout(tmp_path / "runner")
    rpc = RunnerRpc(layout, images=None, sessions=ExecSessions())  # type: ignore[arg-type]
    rpc.local_s3 = LocalS3(Endpoint("10.0.0.7", 7154))
    seen: list[RunStart] = []

    async def start(msg: RunStart) -> Msg:
        seen.append(msg)
        return Ok()

    rpc.start = start  # type: ignore[method-assign]
    table = rpc.handlers(AppDirs(layout, 3600))
    msg = RunStart(session="s1", assignment=assignment(env_for(bucket())), command="true")
    assert isinstance(asyncio.run(table(msg)), Ok)
    assert seen[0].assignment.env[SERVICE_ADDRESSES] == "10.0.0.7:7154"


def test_a_runner_without_a_gateway_leaves_the_placeholder() -> None:
    a = assignment(env_for(bucket()))
    assert LocalS3(None).assignment(a) is a


def test_run_sessions_and_cron_jobs_start_with_the_localized_environment() -> None:
    seen: list[RunStart] = []

    async def start(msg: RunStart) -> Msg:
        seen.append(msg)
        return Ok()

    local = LocalS3(Endpoint("10.0.0.7", 7154))
    msg = RunStart(session="s1", assignment=assignment(env_for(bucket())), command="true")
    asyncio.run(local.guard(start)(msg))
    assert seen[0].assignment.env["AWS_S3_ENDPOINT_URL"] == "http://10.0.0.7:7154"
    assert seen[0].command == "true"
    [a] = local.assignments([msg.assignment])
    assert a.env == seen[0].assignment.env


def test_the_gateway_is_this_hosts_only_when_the_plan_runs_one_here() -> None:
    plan = weedplan.new_plan(["10.0.0.1", "10.0.0.2"], ["10.0.0.7", "10.0.0.8"], STORE)
    on = msgspec.structs.replace(plan, s3_gateways=True)
    assert own_gateway(weedplan.for_host(on, "10.0.0.7", ["runner"])) == Endpoint("10.0.0.7", 7154)
    assert own_gateway(weedplan.for_host(plan, "10.0.0.7", ["runner"])) is None  # off
    assert own_gateway(weedplan.for_host(on, "10.0.0.1", ["controller"])) is None
    assert own_gateway(None) is None


STORE = weedplan.FilerStore(hosts=["10.0.0.1"], port=5432, password="pw0123456789")
