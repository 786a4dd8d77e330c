"""Apps' buckets in a cluster: made in the shared tree, served by its gateways.

Theory of operation (the plan, pure, is roost.datadir.s3cluster). A
servicehost whose cluster runs S3 gateways keeps no `weed server`: state.json
records each app's bucket and key as on one machine (a Service of kind
"s3", its port the gateways'), but the key is an identity in the filers'
/etc/iam (`weed shell` s3.configure) and the bucket a directory of the
filers' /.buckets, reached through this host's filer front; every gateway
serves both, with the tree's two copies of every object.

  provision:  the key recorded (state.json), the guard identity made once
              per cluster, the app's identity put, the bucket made, and the
              answer given only once this host's gateway takes the key
              (a signed HEAD). Asking again answers the same key.
  take on:    (a host restore, adopt.py: the bucket recorded as the lost
              servicehost had it) the bucket and the app's identity looked
              for in the tree; the identity put again only when missing,
              the bucket made (empty, a warning) only when missing; no
              object is touched. Then the same answer as a provision's.
  removal:    a final backup of every object (read through the filer), the
              identity deleted and the gateway seen refusing it, then the
              record dropped and the bucket deleted with its objects. A
              failed backup or deletion of the key removes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from roost.datadir import s3cluster, s3gateway
from roost.datadir.s3cluster import Gateways
from roost.datadir.s3plan import Key
from roost.datadir.seaweed import weed_binary
from roost.proc.spawn import start
from roost.proc.stop import terminate
from roost.servicehost import s3filer
from roost.servicehost.s3filer import S3Problem, ServiceProblem
from roost.servicehost.spawn import BASE_ENV
from roost.servicehost.state import HostState, Service
from roost.wire.messages import RUNNER_S3_HOST, BucketCredentials

log = logging.getLogger("roost.servicehost")

# A `weed shell` takes about a second; one whose master does not answer
# waits for it without end (measured: no output, no exit, 25 s). Within the
# controller's 60 s for a whole provision.
SHELL_TIMEOUT_S = 20.0
# Every request goes through this host's filer front, which hands its
# connections to the second filer only once the first failed two checks a
# second apart (filerfront.py): a request in between is cut (measured on
# loopback: "Remote end closed connection without response" right after
# the first filer was killed). Each step is idempotent, so it is tried
# again for this long before the request is refused.
FRONT_MOVE_S = 15.0
RETRY_S = 0.5
T = TypeVar("T")


class ClusterBuckets:
    """The bucket store of a cluster's servicehost (module docstring); `state`
    and `save` are the servicehost's state.json and its writer."""

    def __init__(self, gateways: Gateways, state: HostState, save: Callable[[], None]) -> None:
        self.gw = gateways
        self.state = state
        self.save = save
        self.buckets_dir = gateways.buckets_dir

    def filer(self) -> str:
        return self.gw.filer_url()

    # ------------------------------------------------------------ requests

    def credentials(self, svc: Service) -> BucketCredentials:
        """The endpoint names no host: each runner puts its own (s3cluster)."""
        return BucketCredentials(
            app=svc.app, host=RUNNER_S3_HOST, port=svc.port, bucket=svc.database,
            access_key=svc.username, secret_key=svc.password,
            url=s3cluster.endpoint_url(svc.port),
        )  # fmt: skip

    async def provision(self, app: str, bucket: str) -> Service:
        key = self.state.key(app, "s3")
        svc = self.state.services.get(key)
        if svc is None:
            # The servicehosts share the tree: a bucket there that this one
            # does not hold is another servicehost's app's.
            try:
                taken = await self._riding(self._exists, f"{self.buckets_dir}/{bucket}")
            except (OSError, S3Problem) as exc:
                raise ServiceProblem(f"could not look for bucket {bucket}: {exc}", True) from None
            if taken:
                raise ServiceProblem(f"bucket {bucket} is held by another app of the cluster")
            svc = Service(
                app=app, kind="s3", port=self.gw.gateway.port, database=bucket,
                username=s3filer.new_key(), password=s3filer.new_secret(),
            )  # fmt: skip
            self.state.services[key] = svc
            self.save()
        try:
            await self._guard()
            await self._riding(self._shell, s3gateway.configure_script(_key(svc)))
            await self._riding(s3filer.make_bucket, self.filer(), f"{self.buckets_dir}/{bucket}")
        except (OSError, S3Problem) as exc:
            raise ServiceProblem(f"could not make bucket {bucket}: {exc}", True) from None
        await self._served(svc)
        log.info("s3 for %s: bucket %s ready in the shared tree", app, bucket)
        return svc

    async def take_on(self, svc: Service) -> bool:
        """A lost servicehost's bucket, recorded here already (adopt.py):
        the bucket and identity checked in the tree, the identity put again
        only if missing, the bucket made (empty) only if missing; never an
        object deleted. Whether the bucket was there. Idempotent."""
        top = f"{self.buckets_dir}/{svc.database}"
        ident = s3cluster.identity_path(_key(svc).name)
        try:
            there = await self._riding(self._exists, top)
            if not await self._riding(self._exists, ident):
                log.warning("s3 for %s: its identity was not in /etc/iam: put again", svc.app)
                await self._riding(self._shell, s3gateway.configure_script(_key(svc)))
            await self._guard()
            if not there:
                log.warning(
                    "s3 for %s: bucket %s was not in the shared tree: made empty (its objects "
                    "are in its data backups: `roost backups restore --id`)", svc.app, svc.database,
                )  # fmt: skip
                await self._riding(s3filer.make_bucket, self.filer(), top)
        except (OSError, S3Problem) as exc:
            raise ServiceProblem(f"could not take on bucket {svc.database}: {exc}", True) from None
        await self._served(svc)
        log.info("s3 for %s: bucket %s taken on in the shared tree", svc.app, svc.database)
        return there

    async def _served(self, svc: Service) -> None:
        """This host's gateway takes the key and refuses a wrong secret, or
        ServiceProblem (to be asked again)."""
        if not await self._opens(svc, True):
            raise ServiceProblem(f"the S3 gateway does not take {svc.app}'s key yet", True)
        # A gateway that has read no identity yet checks no signature at all:
        # the key's opening the bucket means something once a wrong secret
        # is refused.
        wrong = msgspec.structs.replace(svc, password=s3filer.new_secret())
        if not await self._opens(wrong, False):
            raise ServiceProblem("the S3 gateway does not check signatures yet", True)

    async def remove(self, app: str, dest: Path) -> bool:
        """Final backup to `dest`, the key deleted, the bucket deleted.
        False: no bucket here."""
        svc = self.state.get(app, "s3")
        if svc is None:
            return False
        await s3filer.final_backup(app, svc.database, dest, self._archive_riding)
        try:
            await self._riding(self._shell, s3gateway.remove_script(_key(svc)))
        except (OSError, S3Problem) as exc:
            raise ServiceProblem(f"could not delete {app}'s key: {exc}", True) from None
        if not await self._opens(svc, False):
            raise ServiceProblem(f"the S3 gateway still takes {app}'s deleted key", True)
        self.state.services.pop(self.state.key(app, "s3"), None)
        self.save()
        try:
            await self._riding(
                s3filer.delete_bucket, self.filer(), f"{self.buckets_dir}/{svc.database}"
            )
        except (OSError, S3Problem) as exc:
            # The key is gone already: the objects are unreachable to the app.
            log.warning("bucket %s of %s was not deleted: %s", svc.database, app, exc)
        return True

    # ------------------------------------------------------------ the store

    async def _archive_riding(self, bucket: str, dest: Path) -> int:
        return await self._riding(self.archive, bucket, dest)

    async def archive(self, bucket: str, dest: Path) -> int:
        top = f"{self.buckets_dir}/{bucket}"
        return await asyncio.to_thread(s3filer.archive_to, self.filer(), top, dest)

    def walk(self, directory: str) -> Iterator[tuple[str, int]]:
        return s3filer.walk(self.filer(), directory)

    # ------------------------------------------------------------ helpers

    async def _opens(self, svc: Service, want: bool) -> bool:
        at = str(self.gw.gateway)
        return await s3filer.key_opens(
            at, svc.database, svc.username, svc.password, want, s3filer.KEY_WAIT_S
        )

    async def _guard(self) -> None:
        """The guard identity, once per cluster (s3cluster's docstring)."""
        if await self._riding(self._exists, s3cluster.identity_path(s3cluster.GUARD_NAME)):
            return
        guard = s3cluster.guard_key(s3filer.new_key(), s3filer.new_secret())
        await self._riding(self._shell, s3gateway.configure_script(guard))
        log.info("the S3 gateways' guard identity is made")

    async def _shell(self, script: str) -> None:
        """`script` run by `weed shell` on the filers through this host's front."""
        argv = s3gateway.shell_argv(weed_binary(), list(self.gw.masters), self.gw.filer)
        # Its log files (glog's, in TMPDIR: seaweed.process_env) go with it;
        # what it says is read from its output.
        with tempfile.TemporaryDirectory(prefix="roost-weed-shell-") as tmp:
            proc = await start(
                argv, env={**BASE_ENV, "TMPDIR": tmp}, stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            )  # fmt: skip
            try:
                async with asyncio.timeout(SHELL_TIMEOUT_S):
                    out, _ = await proc.communicate(script.encode())
            except BaseException as exc:
                await asyncio.shield(terminate(proc, 1.0))
                if isinstance(exc, TimeoutError):
                    raise S3Problem(
                        f"weed shell did not finish within {SHELL_TIMEOUT_S:g}s"
                    ) from None
                raise
        text = out.decode(errors="replace")
        if proc.returncode != 0 or s3cluster.shell_failed(text):
            raise S3Problem(f"weed shell failed ({proc.returncode}): {text[-500:].strip()}")

    async def _riding(self, step: Callable[..., Awaitable[T]], *args: Any) -> T:
        """`step(*args)`, tried again while the front may be moving (FRONT_MOVE_S)."""
        deadline = time.monotonic() + FRONT_MOVE_S
        while True:
            try:
                return await step(*args)
            except (OSError, S3Problem) as exc:
                if time.monotonic() > deadline:
                    raise
                log.info("through the filer front, once more: %s", exc)
            await asyncio.sleep(RETRY_S)

    async def _exists(self, path: str) -> bool:
        return await asyncio.to_thread(self._head, path)

    def _head(self, path: str) -> bool:
        req = urllib.request.Request(f"{self.filer()}{path}", method="HEAD")
        try:
            with urllib.request.urlopen(req, timeout=s3filer.HTTP_TIMEOUT_S):
                return True
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return False
            raise S3Problem(f"the filer answered {exc.code} to HEAD {path}") from None


def _key(svc: Service) -> Key:
    return s3cluster.app_key(svc.app, svc.username, svc.password, svc.database)
