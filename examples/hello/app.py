"""The example app Roost's demo and tests deploy."""

import os
import socket

from flask import Flask

app = Flask(__name__)

GREETING = "Hello from Roost!"


@app.route("/")
def index() -> str:
    return f"{GREETING}\n"


@app.route("/env/<name>")
def env(name: str) -> str:
    return os.environ.get(name, "")


@app.route("/whoami")
def whoami() -> dict[str, object]:
    return {"pid": os.getpid(), "host": socket.gethostname(), "port": os.environ.get("PORT")}
