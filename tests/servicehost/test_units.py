"""Pure parts of the servicehost: names, URLs, env, configs, policies, codecs."""

from __future__ import annotations

import asyncio
import importlib.machinery
import os
import stat
import sys
import types
from pathlib import Path

import pytest

from roost.appspec import django_settings
from roost.appspec.service_env import service_environment
from roost.servicehost import binaries
from roost.servicehost.addresses import advertised_host, listen_hosts
from roost.servicehost.backups import backup_name
from roost.servicehost.disk import refusal, tree_size
from roost.servicehost.host import limits_problem
from roost.servicehost.names import BadAppName, check_app, pg_name, postgres_url, redis_url
from roost.servicehost.postgres import (
    PidRecord,
    Postgres,
    listen_addresses,
    parse_postmaster_pid,
    render_hba,
)
from roost.servicehost.redis import bind_addresses, render_conf
from roost.servicehost.resp import RedisError, encode_command, parse_info, read_reply
from roost.servicehost.state import HostState, PgCluster, Service, load_state, save_state
from roost.servicehost.supervised import server_policy
from roost.settings import Settings
from roost.wire.messages import ServiceCredentials

# ---------------------------------------------------------------- names and URLs


def test_app_names_map_to_quotable_pg_names() -> None:
    assert pg_name("my-app") == "app_my_app"
    assert pg_name("a_b9") == "app_a_b9"
    for bad in ("", "UPPER", "semi;colon", 'quo"te', "x" * 49, "../etc", "sp ace"):
        with pytest.raises(BadAppName):
            check_app(bad)


def test_urls() -> None:
    assert postgres_url("127.0.0.1", 5432, "app_a", "app_a", "p-w_d") == (
        "postgres://app_a:p-w_d@127.0.0.1:5432/app_a"
    )
    assert postgres_url("::1", 5, "d", "u", "a/b@c") == "postgres://u:a%2Fb%40c@[::1]:5/d"
    assert redis_url("10.0.0.2", 6380, "secret") == "redis://:secret@10.0.0.2:6380/0"


def test_service_environment_has_urls_and_discrete_variables() -> None:
    pg = ServiceCredentials(
        app="a", kind="postgres", host="h", port=5433, database="app_a", username="app_a",
        password="pw", url="postgres://app_a:pw@h:5433/app_a",
    )  # fmt: skip
    rd = ServiceCredentials(
        app="a", kind="redis", host="h", port=6390, database="0", password="rp",
        url="redis://:rp@h:6390/0",
    )  # fmt: skip
    env = service_environment([pg, rd])
    assert env["DATABASE_URL"] == pg.url and env["REDIS_URL"] == rd.url
    assert (env["POSTGRES_HOST"], env["POSTGRES_PORT"], env["POSTGRES_DATABASE"]) == (
        "h", "5433", "app_a",
    )  # fmt: skip
    assert (env["POSTGRES_USERNAME"], env["POSTGRES_PASSWORD"]) == ("app_a", "pw")
    assert (env["PGUSER"], env["PGPASSWORD"], env["PGDATABASE"]) == ("app_a", "pw", "app_a")
    assert (env["REDIS_HOST"], env["REDIS_PORT"], env["REDIS_PASSWORD"]) == ("h", "6390", "rp")
    assert service_environment([]) == {}
    assert "DATABASE_URL" not in service_environment([rd])


def test_addresses() -> None:
    # One host: everything on loopback.
    assert listen_hosts("127.0.0.1", "127.0.0.1") == ["127.0.0.1"]
    assert advertised_host("", "127.0.0.1", "127.0.0.1") == "127.0.0.1"
    # A cluster member: its cluster address too, and apps are told that one.
    assert listen_hosts("127.0.0.1", "10.0.0.5") == ["127.0.0.1", "10.0.0.5"]
    assert advertised_host("", "127.0.0.1", "10.0.0.5") == "10.0.0.5"
    assert listen_hosts("0.0.0.0", "10.0.0.5") == ["*"]
    assert advertised_host("", "0.0.0.0") == "127.0.0.1"
    assert advertised_host("", "10.1.2.3") == "10.1.2.3"
    assert advertised_host("db.lan", "0.0.0.0", "10.0.0.5") == "db.lan"


# ---------------------------------------------------------------- server configs


def test_postgres_listens_on_loopback_always_and_hba_never_trusts() -> None:
    assert listen_addresses(["127.0.0.1"]) == "127.0.0.1"
    assert listen_addresses(["*"]) == "*"
    assert listen_addresses(["127.0.0.1", "10.0.0.5"]) == "127.0.0.1,10.0.0.5"
    rules = [ln.split() for ln in render_hba("roost").splitlines() if not ln.startswith("#")]
    assert all(r[-1] in ("scram-sha-256", "reject") for r in rules)
    # The superuser only from loopback; everyone else only to their own database.
    assert {r[3] for r in rules if r[2] == "roost"} == {"127.0.0.1/32", "::1/128"}
    assert [r[1] for r in rules if r[2] == "all" and r[-1] != "reject"] == ["sameuser"]


def test_redis_conf() -> None:
    svc = Service(
        app="a", kind="redis", port=6390, password="apppw", memory_mb=16, admin_password="adm"
    )
    conf = render_conf(svc, Path("/data/redis/a"), ["127.0.0.1"])
    lines = conf.splitlines()
    for expected in (
        "port 6390", "bind 127.0.0.1", "maxmemory 16mb", "maxmemory-policy volatile-lru",
        "appendonly yes", 'dir "/data/redis/a"',
    ):  # fmt: skip
        assert expected in lines
    default = next(ln for ln in lines if ln.startswith("user default "))
    assert ">apppw" in default and "-config" in default and "+config|get" in default
    assert "-shutdown" in default and "-acl" in default
    assert next(ln for ln in lines if ln.startswith("user roost-admin ")).endswith(
        ">adm ~* &* +@all"
    )
    assert bind_addresses(["*"]) == "* -::*"
    assert bind_addresses(["127.0.0.1", "10.0.0.5"]) == "127.0.0.1 10.0.0.5"


# ---------------------------------------------------------------- policies


def test_servers_back_off_to_the_setting_and_no_exit_is_final() -> None:
    p = server_policy(backoff_max_s=4.0, stop_grace_s=60.0)
    assert [p.backoff.delay(n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 4.0]
    assert p.backoff.failures_after(5, ran_s=30.0) == 1  # ran 30 s: history forgiven
    # PostgreSQL's and Redis's exit statuses are not Roost's: never a reason to give up.
    assert p.fatal == frozenset() and p.stop_grace_s == 60.0 and p.ready_timeout_s == 60.0


def test_disk_refusal() -> None:
    assert refusal(free=50, total=100, min_free_fraction=0.15) is None
    why = refusal(free=10 * 2**30, total=100 * 2**30, min_free_fraction=0.15)
    assert why is not None and "10.0% < 15% required" in why and "ROOST_MIN_FREE_DISK" in why
    assert refusal(free=0, total=0, min_free_fraction=0.15) is None


def test_tree_size(tmp_path: Path) -> None:
    assert tree_size(tmp_path / "missing") == 0
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "f").write_bytes(b"x" * 10000)
    assert tree_size(tmp_path) >= 10000


def test_backup_names_are_utc_and_never_reused() -> None:
    now = 1_700_000_000.0  # 2023-11-14T22:13:20Z
    assert backup_name("postgres", now, set()) == "postgres-20231114T221320Z.dump"
    assert backup_name("redis", now, set()) == "redis-20231114T221320Z.rdb"
    taken = {"redis-20231114T221320Z.rdb", "redis-20231114T221320Z-2.rdb"}
    assert backup_name("redis", now, taken) == "redis-20231114T221320Z-3.rdb"


# ---------------------------------------------------------------- state file


def test_state_roundtrip_is_private(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    assert load_state(path) == HostState()
    st = HostState(postgres=PgCluster(port=5999, password="su", initialized=True))
    st.services[HostState.key("a", "redis")] = Service(
        app="a", kind="redis", port=6000, password="p", memory_mb=8, admin_password="q"
    )
    save_state(path, st)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    back = load_state(path)
    assert back == st and back.get("a", "redis") is not None and back.of_kind("postgres") == []


# ---------------------------------------------------------------- RESP


def test_resp_codec() -> None:
    assert encode_command("SET", "k", 1) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\n1\r\n"

    async def parse(data: bytes) -> object:
        reader = asyncio.StreamReader()
        reader.feed_data(data)
        reader.feed_eof()
        return await read_reply(reader)

    assert asyncio.run(parse(b"+PONG\r\n")) == "PONG"
    assert asyncio.run(parse(b":42\r\n")) == 42
    assert asyncio.run(parse(b"$-1\r\n")) is None
    assert asyncio.run(parse(b"*2\r\n$1\r\na\r\n:1\r\n")) == ["a", 1]
    with pytest.raises(RedisError, match="NOPERM"):
        asyncio.run(parse(b"-NOPERM no\r\n"))
    assert parse_info("# Memory\r\nused_memory:100\r\nmaxmemory:0\r\n") == {
        "used_memory": "100",
        "maxmemory": "0",
    }


# ---------------------------------------------------------------- binaries


def test_missing_binaries_say_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(binaries, "find_pg_bin", lambda: None)
    hint = binaries.missing_hint()
    assert hint is not None and "PostgreSQL" in hint and "apt-get install -y postgresql" in hint
    monkeypatch.undo()
    assert binaries.missing_hint() is None  # installed on every test machine


# ---------------------------------------------------------------- Django settings


def _fake_module(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    mod = types.ModuleType(name)
    mod.__spec__ = importlib.machinery.ModuleSpec(name, None)
    monkeypatch.setitem(sys.modules, name, mod)


def _settings_after(source: str, base: dict[str, object]) -> dict[str, object]:
    ns = dict(base)
    exec(compile(source, "settings.py", "exec"), ns)
    return ns


def test_django_settings_use_the_provisioned_services(monkeypatch: pytest.MonkeyPatch) -> None:
    _fake_module(monkeypatch, "django.core.cache.backends.redis")
    _fake_module(monkeypatch, "redis")
    monkeypatch.setenv("DATABASE_URL", "postgres://app_a:p%40ss@10.0.0.2:5433/app_a")
    monkeypatch.setenv("REDIS_URL", "redis://:rpw@10.0.0.2:6390/0")
    monkeypatch.setenv("ROOST_HOSTNAMES", "a.example.com,www.a.example.com")
    base = {
        "DATABASES": {
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": "db.sqlite3"},
            "legacy": {"ENGINE": "django.db.backends.sqlite3", "NAME": "old.sqlite3"},
        },
        "ALLOWED_HOSTS": ["localhost"],
    }
    ns = _settings_after(django_settings.render(conn_max_age=0, key_prefix="a"), base)
    assert ns["DATABASES"] == {
        "default": {
            "ENGINE": "django.db.backends.postgresql", "NAME": "app_a", "USER": "app_a",
            "PASSWORD": "p@ss", "HOST": "10.0.0.2", "PORT": "5433", "CONN_MAX_AGE": 0,
        },
        "legacy": base["DATABASES"]["legacy"],  # type: ignore[index]
    }  # fmt: skip
    assert ns["CACHES"] == {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": "redis://:rpw@10.0.0.2:6390/0",
            "KEY_PREFIX": "a",
        }
    }
    assert ns["ALLOWED_HOSTS"] == ["localhost", "a.example.com", "www.a.example.com"]


def test_django_settings_leave_things_alone_without_services(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for var in ("DATABASE_URL", "REDIS_URL", "ROOST_HOSTNAMES"):
        monkeypatch.delenv(var, raising=False)
    base = {"DATABASES": {"default": {"NAME": "x"}}, "CACHES": {"default": {"BACKEND": "y"}}}
    ns = _settings_after(django_settings.render(), base)
    assert ns["DATABASES"] == base["DATABASES"] and ns["CACHES"] == base["CACHES"]
    # REDIS_URL without a Redis client library in the app: no cache that would fail later.
    monkeypatch.setenv("REDIS_URL", "redis://:x@h:1/0")
    _fake_module(monkeypatch, "django.core.cache.backends.redis")
    monkeypatch.setitem(sys.modules, "redis", None)  # find_spec -> ValueError/None: absent
    ns = _settings_after(django_settings.render(), base)
    assert ns["CACHES"] == base["CACHES"]
    with pytest.raises(ValueError):
        django_settings.render(conn_max_age=-1)


def test_app_data_is_archived_beside_the_database_backups(tmp_path: Path) -> None:
    import tarfile

    from roost.servicehost.backups import archive_app_data

    src, dest = tmp_path / "appdata" / "shop", tmp_path / "backups" / "shop"
    dest.mkdir(parents=True)
    assert archive_app_data(src, dest, 0.0) is None  # no directory yet
    (src / "media").mkdir(parents=True)
    (src / "media" / "logo.png").write_bytes(b"\x89PNG")
    (src / "escape").symlink_to("/etc/passwd")
    first = archive_app_data(src, dest, 0.0)
    second = archive_app_data(src, dest, 0.0)
    assert first is not None and second is not None and first != second
    with tarfile.open(first) as tar:
        names = {m.name: m for m in tar.getmembers()}
    assert names["data/media/logo.png"].isfile()
    assert names["data/escape"].issym()  # stored as a link, never followed


def test_limits_settings_must_leave_each_app_something() -> None:
    assert limits_problem(Settings()) is None
    for bad in (Settings(postgres_connection_limit=0), Settings(redis_memory_mb=0)):
        why = limits_problem(bad)
        assert why is not None and "must be at least 1" in why
    why = limits_problem(Settings(pg_slot_wal_keep_mb=16))
    assert why is not None and why.startswith("ROOST_PG_SLOT_WAL_KEEP_MB must be at least 32")
    assert limits_problem(Settings(pg_slot_wal_keep_mb=32)) is None
    why = limits_problem(Settings(pair_stuck_after_s=0))
    assert why is not None and why.startswith("ROOST_PAIR_STUCK_AFTER_S must be above 0")


def test_a_slot_holds_at_most_the_setting_s_wal() -> None:
    bins = binaries.Binaries(Path("/pg/bin"), Path("/usr/bin/redis-server"))
    cluster = PgCluster(port=5432, password="pw")
    pg = Postgres(bins, Path("/d"), Path("/l"), None, cluster, ["127.0.0.1"],  # type: ignore[arg-type]
                  slot_wal_keep_mb=Settings().pg_slot_wal_keep_mb)  # fmt: skip
    assert "max_slot_wal_keep_size=4096MB" in pg.argv()


def test_postmaster_pid_is_read_as_postgresql_writes_it() -> None:
    written = (
        "4242\n/data/servicehost/postgres\n1765000000\n5433\n\n127.0.0.1\n"
        "  5433001     32768\nready   \n"
    )
    assert parse_postmaster_pid(written) == PidRecord(
        4242, "/data/servicehost/postgres", 1765000000.0, 5433
    )
    # Being written (a postmaster starting now), or not PostgreSQL's at all: no record.
    assert parse_postmaster_pid("4242\n/data/servicehost/postgres\n") is None
    assert parse_postmaster_pid("") is None
    assert parse_postmaster_pid("x\n/d\n1\n5433\n") is None
    assert parse_postmaster_pid("0\n/d\n1\n5433\n") is None
    assert parse_postmaster_pid("12\n\n1\n5433\n") is None
