"""An app writing to its database through DATABASE_URL, one row per request.

POST /write/<n> inserts row n and answers "ok n" only once PostgreSQL has
committed it (autocommit): what the test counts as a write the app saw
committed. On any database error the request fails (500) and the next one
connects again, through the same address. GET /ids lists the rows; GET
/redis/<n> sets and reads a key through REDIS_URL; GET /env/<name> shows a
variable of its environment; GET /reach/<host>/<port> says whether the app
may open a TCP connection there.
"""

import json
import os
import socket

import psycopg
import redis

_conn = None


def _db():
    global _conn
    if _conn is None or _conn.closed:
        _conn = psycopg.connect(os.environ["DATABASE_URL"], autocommit=True, connect_timeout=3)
        _conn.execute("CREATE TABLE IF NOT EXISTS t (id bigint PRIMARY KEY)")
    return _conn


def _reply(start, status, body):
    start(status, [("Content-Type", "text/plain")])
    return [body.encode()]


def app(environ, start):
    global _conn
    parts = environ.get("PATH_INFO", "/").strip("/").split("/")
    try:
        if parts[0] == "write" and environ["REQUEST_METHOD"] == "POST":
            n = int(parts[1])
            _db().execute("INSERT INTO t (id) VALUES (%s) ON CONFLICT DO NOTHING", (n,))
            return _reply(start, "200 OK", f"ok {n}")
        if parts[0] == "ids":
            ids = [r[0] for r in _db().execute("SELECT id FROM t ORDER BY id")]
            return _reply(start, "200 OK", json.dumps(ids))
        if parts[0] == "redis":
            r = redis.Redis.from_url(os.environ["REDIS_URL"], socket_timeout=3)
            r.set("k", parts[1])
            return _reply(start, "200 OK", r.get("k").decode())
        if parts[0] == "reach":  # can this app open a TCP connection there?
            try:
                socket.create_connection((parts[1], int(parts[2])), timeout=3).close()
                return _reply(start, "200 OK", "open")
            except OSError as exc:
                return _reply(start, "200 OK", type(exc).__name__)
        if parts[0] == "env":
            return _reply(start, "200 OK", os.environ.get(parts[1], ""))
    except Exception as exc:  # the test reads what went wrong
        if isinstance(exc, psycopg.Error) and _conn is not None:
            try:
                _conn.close()
            finally:
                _conn = None
        return _reply(start, "500 Internal Server Error", f"{type(exc).__name__}: {exc}")
    return _reply(start, "200 OK", "ledger\n")
