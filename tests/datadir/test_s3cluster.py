"""Apps' buckets in a cluster (roost.datadir.s3cluster, pure): through this
host's gateway and front when the plan runs one here, the endpoint naming
the runner's placeholder, the guard identity, weed shell's failures."""

from __future__ import annotations

import msgspec

from roost.datadir import s3cluster, s3gateway, weedplan
from roost.datadir.seaweed import Endpoint
from roost.wire.messages import RUNNER_S3_HOST

STORE = weedplan.FilerStore(hosts=["10.0.0.1"], port=5432, password="pw0123456789")


def plan(gateways: bool = True, store: weedplan.FilerStore | None = STORE) -> weedplan.WeedPlan:
    p = weedplan.new_plan(["10.0.0.1", "10.0.0.2", "10.0.0.3"], ["10.0.0.5", "10.0.0.7"], store)
    return msgspec.structs.replace(p, s3_gateways=gateways)


def test_a_storage_host_of_a_plan_with_gateways_uses_its_own() -> None:
    gw = s3cluster.of_plan(weedplan.for_host(plan(), "10.0.0.5", ["servicehost"]))
    assert gw is not None
    assert gw.gateway == Endpoint("10.0.0.5", 7154)
    assert gw.filer == Endpoint("10.0.0.5", 7153)  # its front, to both filers
    assert gw.filer_url() == "http://10.0.0.5:7153"
    assert gw.masters == tuple(Endpoint(f"10.0.0.{i}", 7150) for i in (1, 2, 3))
    assert gw.buckets_dir == weedplan.BUCKETS_FOLDER == "/.buckets"


def test_otherwise_one_machines_way() -> None:
    assert s3cluster.of_plan(None) is None
    off = weedplan.for_host(plan(gateways=False), "10.0.0.5", ["servicehost"])
    assert s3cluster.of_plan(off) is None
    one_filer = weedplan.for_host(plan(store=None), "10.0.0.5", ["servicehost"])
    assert s3cluster.of_plan(one_filer) is None  # no front, no gateway
    assert s3cluster.of_plan(weedplan.for_host(plan(), "10.0.0.1", ["controller"])) is None


def test_the_endpoint_names_the_runners_placeholder_which_never_resolves() -> None:
    assert s3cluster.endpoint_url(7154) == f"http://{RUNNER_S3_HOST}:7154"
    assert RUNNER_S3_HOST.endswith(".invalid")  # RFC 2606: no DNS answers it


def test_the_guard_is_an_admin_identity_and_each_app_its_bucket_only() -> None:
    guard = s3cluster.guard_key("GUARDKEY0123456789AB", "guard-secret-0123456789")
    assert "-user=roost-guard" in s3gateway.configure_script(guard)
    assert "-actions=Admin" in s3gateway.configure_script(guard)
    key = s3cluster.app_key("my_shop", "SHOPKEY0123456789AB", "shop-secret-0123456", "my-shop")
    script = s3gateway.configure_script(key)
    assert "-user=app-my_shop-SHOPKEY0123456789AB" in script
    assert "-buckets=my-shop" in script and "Admin" not in script
    assert s3cluster.identity_path("roost-guard") == "/etc/iam/identities/roost-guard.json"


def test_weed_shells_failures_are_read_from_its_output() -> None:
    assert not s3cluster.shell_failed("> s3.configure -user=x ...\n{\n}\n")
    assert s3cluster.shell_failed("> \nerror: rpc error: code = Unavailable\n")
    assert s3cluster.shell_failed("Error: no filer found\n")
