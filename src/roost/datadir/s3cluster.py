"""Apps' buckets in a cluster, through its S3 gateways (pure: where and what).

Theory of operation. With two filers and the plan's `s3_gateways`, every
storage host runs a `weed s3` gateway beside its filer front (s3gateway.py).
A servicehost there keeps no `weed server` of its own (one copy on one
host): it makes each app's bucket and key in the tree the filers share, so
every object has the tree's two copies on two hosts, and any gateway
serves it:

  identity  the app's key, `s3plan.APP_ACTIONS` on its bucket only, in the
            filers' /etc/iam through `weed shell`'s s3.configure
            (s3gateway.configure_script); removed with -delete, which a
            running gateway follows within a second (no revoked keys kept,
            unlike one machine's -config file)
  guard     one more identity, never given out (`GUARD`): a gateway with no
            identity at all checks no signature, so the last app's key
            removed must not leave the gateways open. Made once per cluster
            (the servicehosts share /etc/iam) with a secret nobody keeps
  bucket    a directory of the filers' BUCKETS_FOLDER, made and deleted
            through the filer's HTTP on this host's front, as one machine's
            are on its own filer; its objects are read there for backups

Every app is given the gateway on its own runner's host, which outlives
any other host's death: the credentials name RUNNER_S3_HOST (wire), which
the runner replaces with its own address (runner/s3local.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from roost.datadir import filerfront, s3plan, weedplan
from roost.datadir.seaweed import Endpoint
from roost.datadir.weedplan import WeedPlan
from roost.wire.messages import RUNNER_S3_HOST

GUARD_NAME = "roost-guard"
# Where the filers keep identities (`weed shell`'s s3.configure writes them).
IDENTITIES_DIR = "/etc/iam/identities"


@dataclass(frozen=True)
class Gateways:
    """What this servicehost reaches its cluster's buckets through."""

    gateway: Endpoint  # this host's S3 gateway
    filer: Endpoint  # this host's filer front (HTTP; gRPC at +10000)
    masters: tuple[Endpoint, ...]
    buckets_dir: str = weedplan.BUCKETS_FOLDER

    def filer_url(self) -> str:
        return f"http://{self.filer}"


def of_plan(plan: WeedPlan | None) -> Gateways | None:
    """The gateways when this host runs one (a plan with two filers and
    `s3_gateways`, this host a storage host); None: one machine's way."""
    if plan is None or not weedplan.owner(plan, "s3"):
        return None
    return Gateways(
        gateway=Endpoint(plan.host, plan.s3_port),
        filer=filerfront.front(plan.host),
        masters=tuple(Endpoint(m, plan.master_port) for m in plan.masters),
    )


def guard_key(access_key: str, secret: str) -> s3plan.Key:
    """The guard identity (module docstring): Admin, its secret kept nowhere."""
    return s3plan.Key(GUARD_NAME, access_key, secret)


def app_key(app: str, access_key: str, secret: str, bucket: str) -> s3plan.Key:
    return s3plan.Key(s3plan.identity_name(app, access_key), access_key, secret, bucket)


def identity_path(name: str) -> str:
    return f"{IDENTITIES_DIR}/{name}.json"


def endpoint_url(port: int) -> str:
    """The endpoint every app is given: its runner's own gateway (the runner
    puts its address in place of RUNNER_S3_HOST)."""
    return s3plan.endpoint_url(RUNNER_S3_HOST, port)


def shell_failed(output: str) -> bool:
    """Whether `weed shell`'s output says a command failed (`error: ...`).
    4.48 also exits 1 then (measured: s3.configure with no filer), which is
    taken as failure too; the output is read as well, so that a failure
    is never taken for success whatever a release's exit status says."""
    return any(line.strip().lower().startswith("error") for line in output.splitlines())
