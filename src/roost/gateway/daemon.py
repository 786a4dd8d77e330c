"""The gateway daemon (`roost gateway`): the platform's SSH endpoint.

It keeps nothing that another gateway could not rebuild: its host key
(DATA/gateway/ssh_host_ed25519_key, made once, so clients can pin it) and
a cache of each app's git repository (DATA/gateway/repos). Accounts, keys,
apps, builds, runners and data directories are asked of the controllers,
runners and servicehost over roost.wire. On its address-book endpoint
"gateway" it answers backupd (repobackup.py: bundles of the repositories,
and restoring one); a cluster whose book has none for it serves SSH only.

Stop (SIGTERM/SIGINT): stop accepting connections, close the open ones
(their exec sessions on runners and servicehosts are closed, which stops
those processes), then return.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

import asyncssh

from roost import aio, metrics
from roost.daemonize import run_daemon
from roost.gateway.git import GitService
from roost.gateway.repobackup import RepoBackups
from roost.gateway.server import Gateway
from roost.proc.exits import ConfigError
from roost.settings import Settings
from roost.wire.bootstrap import open_node, own_endpoints
from roost.wire.dispatch import Handlers
from roost.wire.rpc import RpcClient, RpcServer

log = logging.getLogger("roost.gateway")

HOST_KEY = "ssh_host_ed25519_key"
CLOSE_GRACE_S = 5.0


def host_key(root: Path) -> asyncssh.SSHKey:
    """The gateway's persistent host key (generated on first start)."""
    path = root / HOST_KEY
    if path.exists():
        return asyncssh.read_private_key(str(path))
    root.mkdir(parents=True, exist_ok=True)
    key = asyncssh.generate_private_key("ssh-ed25519", comment="roost-gateway")
    tmp = path.with_suffix(".tmp")
    tmp.touch(mode=0o600)
    key.write_private_key(str(tmp))
    tmp.replace(path)
    key.write_public_key(str(root / f"{HOST_KEY}.pub"))
    log.info("made SSH host key %s (%s)", path, key.get_fingerprint("sha256"))
    return key


async def serve(
    data_dir: Path,
    settings: Settings,
    name: str = "gateway",
    port: int | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    stop = stop or asyncio.Event()
    metrics.serve(settings.metrics_port, settings.bind_host)
    root = data_dir / "gateway"
    key = host_key(root)
    node, cluster = open_node(data_dir, name)
    if not cluster.of("controller"):
        raise ConfigError(f"{data_dir / 'cluster.json'} lists no controller endpoint")
    async with node:
        controllers = RpcClient(node, cluster.of("controller"))
        services = RpcClient(node, cluster.of("servicehost")) if cluster.of("servicehost") else None
        git = GitService(root, controllers, settings.max_upload_bytes, name)
        git.prepare()
        gateway = Gateway(node, controllers, services, git)
        rpc = [
            RpcServer(node, ep.address, handlers(git))
            for ep in own_endpoints(cluster, "gateway", node)
        ]
        listen_port = settings.ssh_port if port is None else port
        server = await asyncssh.create_server(
            gateway.login_factory(),
            settings.bind_host,
            listen_port,
            server_host_keys=[key],
            encoding=None,
            line_editor=False,
            x11_forwarding=False,
            agent_forwarding=False,
            keepalive_interval=30,
        )
        log.info(
            "gateway %s: SSH on %s:%d (host key %s)",
            name,
            settings.bind_host,
            listen_port,
            key.get_fingerprint("sha256"),
        )
        try:
            async with asyncio.TaskGroup() as tg:
                hooks = tg.create_task(git.serve_hooks())
                tidy = tg.create_task(git.keep_tidy(settings.archive_days * 86400))
                serving = [tg.create_task(s.serve()) for s in rpc]
                if rpc:
                    log.info("gateway %s: RPC on %s", name, [s.address for s in rpc])
                await stop.wait()
                log.info("gateway stopping")
                server.close()
                await gateway.close_all(CLOSE_GRACE_S)
                with contextlib.suppress(TimeoutError):
                    await aio.wait_for(server.wait_closed(), CLOSE_GRACE_S)
                hooks.cancel()
                tidy.cancel()
                for t in serving:
                    t.cancel()
        finally:
            for client in (controllers, services):
                if client is not None:
                    await client.close()
    log.info("gateway %s stopped", name)


def handlers(git: GitService) -> Handlers:
    """The gateway's table: what backupd asks of it."""
    return Handlers("the gateway", RepoBackups(git).entries())


def run(data_dir: Path, settings: Settings, name: str = "gateway", port: int | None = None) -> None:
    """Run the gateway until SIGTERM/SIGINT."""
    run_daemon("gateway", lambda stop: serve(data_dir, settings, name, port, stop))
