"""The controller's one way to the state database from a coroutine.

Theory of operation: `Store` (store*.py) is synchronous SQLAlchemy, one short
transaction per method. A coroutine that called it directly would stall the
event loop for the query's duration: every runner's heartbeat, every API
request and the lease renewal would wait behind one slow query. `AsyncStore`
wraps every method the controller uses in an awaitable that runs the
synchronous one on a thread pool of its own, and is the only store the
Controller and its coroutines hold: the `Store` it wraps is private to the
executor side, so a coroutine has no way to reach the database but to await.

One pool, few threads: SQLite serialises writers (a second one waits in its
busy handler) while WAL lets a reader run beside a writer, so two threads
there; PostgreSQL takes four, still under SQLAlchemy's default engine pool
of five connections, so a thread never waits for a connection. A slow query
then delays other state calls (they queue for a thread), never the loop.

Each method is named here (`_on_executor(Store.x)`), and takes its
signature from the store's method: mypy checks every call against the real
parameters and return type, and the face follows the store as it changes.
Nothing reaches the store by a name looked up at run time.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Container, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Concatenate, ParamSpec, TypeVar

from roost.controller import desired
from roost.controller.store import Store
from roost.state import leases
from roost.wire.messages import LogLine

P = ParamSpec("P")
T = TypeVar("T")

SQLITE_THREADS = 2
SERVER_THREADS = 4


def _on_executor(
    fn: Callable[Concatenate[Store, P], T],
) -> Callable[Concatenate[AsyncStore, P], Awaitable[T]]:
    """`Store.fn` as an AsyncStore method: same parameters, awaited on the executor."""

    async def method(self: AsyncStore, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return await self._run(fn, self._store, *args, **kwargs)

    functools.update_wrapper(method, fn)
    return method


class AsyncStore:
    def __init__(self, store: Store, threads: int | None = None) -> None:
        self._store = store
        # Told of every batch of lines written by append_logs (controller/logdrains.py).
        self.log_tap: Callable[[Sequence[LogLine]], None] | None = None
        if threads is None:
            sqlite = store.engine.dialect.name == "sqlite"
            threads = SQLITE_THREADS if sqlite else SERVER_THREADS
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="roost-state")

    async def _run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    async def aclose(self) -> None:
        """Let running calls finish, then close the database connections."""
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        """The same, from synchronous code (tests' fixtures, shutdown hooks)."""
        self._pool.shutdown(wait=True)
        self._store.engine.dispose()

    # ------------------------------------------------------------ leases

    async def acquire_lease(self, name: str, holder: str, ttl: float) -> leases.Lease | None:
        return await self._run(leases.acquire, self._store.engine, name, holder, ttl)

    async def release_lease(self, name: str, holder: str) -> None:
        await self._run(leases.release, self._store.engine, name, holder)

    # ------------------------------------------------------------ the reconcile's read

    async def read_desired(
        self, reader: desired.Reader, cached: Container[desired.ReleaseKey]
    ) -> desired.Desired | None:
        return await self._run(reader.read, self._store, cached)

    # ------------------------------------------------------------ accounts and access

    create_account_hashed = _on_executor(Store.create_account_hashed)
    account_by_email = _on_executor(Store.account_by_email)
    account_by_id = _on_executor(Store.account_by_id)
    issue_token = _on_executor(Store.issue_token)
    account_for_token = _on_executor(Store.account_for_token)
    token_expired = _on_executor(Store.token_expired)
    tokens = _on_executor(Store.tokens)
    revoke_token = _on_executor(Store.revoke_token)
    add_ssh_key = _on_executor(Store.add_ssh_key)
    ssh_keys = _on_executor(Store.ssh_keys)
    remove_ssh_key = _on_executor(Store.remove_ssh_key)
    account_for_ssh_key = _on_executor(Store.account_for_ssh_key)
    add_collaborator = _on_executor(Store.add_collaborator)
    remove_collaborator = _on_executor(Store.remove_collaborator)
    collaborators = _on_executor(Store.collaborators)
    apps_visible_to = _on_executor(Store.apps_visible_to)

    # ------------------------------------------------------------ apps, builds, releases

    create_app = _on_executor(Store.create_app)
    app = _on_executor(Store.app)
    app_by_id = _on_executor(Store.app_by_id)
    apps = _on_executor(Store.apps)
    delete_app = _on_executor(Store.delete_app)
    set_suspended = _on_executor(Store.set_suspended)
    suspend_for_restore = _on_executor(Store.suspend_for_restore)
    restore_holds = _on_executor(Store.restore_holds)
    release_hold = _on_executor(Store.release_hold)
    set_data_quota = _on_executor(Store.set_data_quota)
    create_build = _on_executor(Store.create_build)
    enqueue_build = _on_executor(Store.enqueue_build)
    claim_queued = _on_executor(Store.claim_queued)
    apps_with_queued = _on_executor(Store.apps_with_queued)
    build = _on_executor(Store.build)
    builds_in = _on_executor(Store.builds_in)
    builds_of = _on_executor(Store.builds_of)
    move_build = _on_executor(Store.move_build)
    release_build = _on_executor(Store.release_build)
    next_release = _on_executor(Store.next_release)
    end_rollout = _on_executor(Store.end_rollout)
    create_release = _on_executor(Store.create_release)
    copy_release = _on_executor(Store.copy_release)
    release = _on_executor(Store.release)
    releases = _on_executor(Store.releases)
    roll_back = _on_executor(Store.roll_back)

    # ------------------------------------------------------------ formation and config

    formation = _on_executor(Store.formation)
    formation_sizes = _on_executor(Store.formation_sizes)
    set_formation = _on_executor(Store.set_formation)
    config_vars = _on_executor(Store.config_vars)
    update_config = _on_executor(Store.update_config)

    # ------------------------------------------------------------ domains and certificates

    add_domain = _on_executor(Store.add_domain)
    remove_domain = _on_executor(Store.remove_domain)
    domains = _on_executor(Store.domains)
    put_certificate = _on_executor(Store.put_certificate)
    certificates = _on_executor(Store.certificates)

    # ------------------------------------------------------------ ACME (store_acme.py)

    acme_orders = _on_executor(Store.acme_orders)
    acme_save_orders = _on_executor(Store.acme_save_orders)
    acme_drop_orders = _on_executor(Store.acme_drop_orders)
    acme_renew_now = _on_executor(Store.acme_renew_now)
    acme_publish = _on_executor(Store.acme_publish)
    acme_withdraw = _on_executor(Store.acme_withdraw)
    acme_account_key = _on_executor(Store.acme_account_key)

    # ------------------------------------------------------------ placements and hosts

    desired_version = _on_executor(Store.desired_version)
    placements = _on_executor(Store.placements)
    drop_placements = _on_executor(Store.drop_placements)
    replace_placements = _on_executor(Store.replace_placements)
    upsert_hosts = _on_executor(Store.upsert_hosts)
    hosts = _on_executor(Store.hosts)
    drain_host = _on_executor(Store.drain_host)
    undrain_host = _on_executor(Store.undrain_host)
    host_drains = _on_executor(Store.host_drains)
    note_host_drains = _on_executor(Store.note_host_drains)
    add_service_pair = _on_executor(Store.add_service_pair)
    service_pairs = _on_executor(Store.service_pairs)
    app_pair = _on_executor(Store.app_pair)
    app_pair_map = _on_executor(Store.app_pair_map)
    set_app_pair = _on_executor(Store.set_app_pair)
    pair_loads = _on_executor(Store.pair_loads)
    replace_pair_member = _on_executor(Store.replace_pair_member)
    retired_servicehosts = _on_executor(Store.retired_servicehosts)

    # ------------------------------------------------------------ logs, events, services

    async def append_logs(self, lines: list[LogLine]) -> None:
        """Write `lines`, then hand them to the log drains (`log_tap`, on the loop)."""
        await self._run(Store.append_logs, self._store, lines)
        if self.log_tap is not None:
            self.log_tap(lines)

    logs = _on_executor(Store.logs)
    add_log_drain = _on_executor(Store.add_log_drain)
    remove_log_drain = _on_executor(Store.remove_log_drain)
    log_drains = _on_executor(Store.log_drains)
    note_drain_status = _on_executor(Store.note_drain_status)
    drain_status = _on_executor(Store.drain_status)
    set_log_retention = _on_executor(Store.set_log_retention)
    log_retention = _on_executor(Store.log_retention)
    trim_logs = _on_executor(Store.trim_logs)
    add_event = _on_executor(Store.add_event)
    events = _on_executor(Store.events)
    bind_service = _on_executor(Store.bind_service)
    unbind_service = _on_executor(Store.unbind_service)
    set_service_host = _on_executor(Store.set_service_host)
    service_bindings = _on_executor(Store.service_bindings)

    # ------------------------------------------------------------ alerts (store_notify.py)

    add_notify_target = _on_executor(Store.add_notify_target)
    notify_target = _on_executor(Store.notify_target)
    notify_targets = _on_executor(Store.notify_targets)
    remove_notify_target = _on_executor(Store.remove_notify_target)
    notify_event = _on_executor(Store.notify_event)
    due_deliveries = _on_executor(Store.due_deliveries)
    record_delivery = _on_executor(Store.record_delivery)
    notify_log = _on_executor(Store.notify_log)
    prune_notify = _on_executor(Store.prune_notify)

    # ------------------------------------------------------------ image copies

    add_copy = _on_executor(Store.add_copy)
    copy_hosts = _on_executor(Store.copy_hosts)
    all_copies = _on_executor(Store.all_copies)
    host_copies = _on_executor(Store.host_copies)
    forget_copies = _on_executor(Store.forget_copies)
    release_images = _on_executor(Store.release_images)

    # ------------------------------------------------------------ cron claims

    cron_claims = _on_executor(Store.cron_claims)
    claim_cron = _on_executor(Store.claim_cron)
    adopt_cron = _on_executor(Store.adopt_cron)
    start_cron = _on_executor(Store.start_cron)
    cron_output = _on_executor(Store.cron_output)
    finish_cron = _on_executor(Store.finish_cron)
    prune_cron = _on_executor(Store.prune_cron)
