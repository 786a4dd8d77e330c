"""S3 helpers for tests of the apps' buckets through weed's gateway: a boto3
client, an identity in the filers' /etc/iam (`weed shell s3.configure`),
a refusal's code, a listening port."""

from __future__ import annotations

import socket
import subprocess
from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config

from roost.datadir import seaweed
from roost.datadir.seaweed import Endpoint


def client(at: Endpoint, key: str, secret: str) -> Any:
    return boto3.client(
        "s3", endpoint_url=f"http://{at}", aws_access_key_id=key, aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1},
                      connect_timeout=5, read_timeout=30),
    )  # fmt: skip


def configure(master: Endpoint, filer: Endpoint, *args: str) -> None:
    """An identity in the filers' /etc/iam, as s3.configure writes it."""
    cmd = " ".join(["s3.configure", *args, "-apply"])
    argv = [seaweed.weed_binary(), "shell", f"-master={master}", f"-filer={filer}"]
    r = subprocess.run(argv, input=f"{cmd}\nexit\n", capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr[-2000:]


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
