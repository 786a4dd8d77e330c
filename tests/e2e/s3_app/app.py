"""Stores and serves objects in its bucket with boto3, configured from its
environment only, as django-storages would be; /other/BUCKET/KEY tries
another app's bucket with this app's key (the attack of tests/e2e/test_s3.py)."""

import os
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError
from flask import Flask, request

app = Flask(__name__)


def s3() -> Any:
    return boto3.client(
        "s3",
        endpoint_url=os.environ["AWS_S3_ENDPOINT_URL"],
        aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        region_name=os.environ["AWS_DEFAULT_REGION"],
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


@app.route("/files/<path:key>", methods=["PUT"])
def put(key: str) -> tuple[str, int]:
    s3().put_object(Bucket=os.environ["AWS_STORAGE_BUCKET_NAME"], Key=key, Body=request.data)
    return "stored\n", 201


@app.route("/files/<path:key>")
def get(key: str) -> bytes:
    obj = s3().get_object(Bucket=os.environ["AWS_STORAGE_BUCKET_NAME"], Key=key)
    return obj["Body"].read()


@app.route("/other/<bucket>/<path:key>", methods=["GET", "PUT"])
def other(bucket: str, key: str) -> tuple[str, int]:
    try:
        if request.method == "PUT":
            s3().put_object(Bucket=bucket, Key=key, Body=request.data)
        else:
            s3().get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        return str(exc.response["Error"]["Code"]), 403
    return "opened\n", 200


@app.route("/config")
def config() -> dict[str, object]:
    from bundle_config import config

    return {"bucket": os.environ["AWS_STORAGE_BUCKET_NAME"], "bundle": config["s3"]["bucket"]}
