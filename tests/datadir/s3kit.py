"""S3 helpers for tests of the apps' buckets through weed's gateway: a boto3
client, an identity in the filers' /etc/iam (`weed shell s3.configure`),
a refusal's code, a listening port."""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config

from roost.datadir import s3gateway, seaweed
from roost.datadir.s3plan import Key
from roost.datadir.seaweed import Endpoint


def client(at: Endpoint, key: str, secret: str) -> Any:
    return boto3.client(
        "s3", endpoint_url=f"http://{at}", aws_access_key_id=key, aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                      connect_timeout=5, read_timeout=30),
    )  # fmt: skip


def configure(master: Endpoint, filer: Endpoint, key: Key, remove: bool = False) -> None:
    """`key`'s identity put in (or removed from) the filers' /etc/iam, by
    s3gateway's scripts."""
    script = s3gateway.remove_script(key) if remove else s3gateway.configure_script(key)
    argv = s3gateway.shell_argv(seaweed.weed_binary(), [master], filer)
    with tempfile.TemporaryDirectory(prefix="roost-weed-shell-") as tmp:  # (its log files)
        env = {**os.environ, "TMPDIR": tmp}
        r = subprocess.run(argv, input=script, capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr[-2000:]


ADMIN = Key(name="admin", access_key="ADMIN0KEY0123456", secret_key="admin-secret-0123456789")


def app_key(app: str) -> Key:
    """`app`'s key on its bucket (named as the app)."""
    upper = app.upper().replace("-", "0")
    return Key(name=app, access_key=f"{upper}0KEY0123456789"[:20],
               secret_key=f"{app}-secret-0123456789", bucket=app)  # fmt: skip


def key_client(at: Endpoint, key: Key) -> Any:
    return client(at, key.access_key, key.secret_key)


def refused(call: Any, code: str) -> bool:
    try:
        call()
    except botocore.exceptions.ClientError as exc:
        return str(exc.response["Error"]["Code"]) == code
    return False


def listening(at: Endpoint) -> bool:
    try:
        socket.create_connection((at.ip, at.port), 1).close()
    except OSError:
        return False
    return True
