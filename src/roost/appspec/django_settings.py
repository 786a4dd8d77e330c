"""The Python appended to a Django settings module (`[django] append_settings`).

ep.io appended settings so an app used its provisioned database without
writing that code; Roost does the same from the environment the app runs
with, read when the settings module is imported (never baked in at build
time, so credentials stay out of images):

  DATABASES["default"]  from DATABASE_URL (postgres://, mysql://, sqlite://)
  CACHES["default"]     from REDIS_URL, with Django's own RedisCache
                        (Django >= 4.0; needs the `redis` package, so only
                        when it is importable)
  ALLOWED_HOSTS         extended with ROOST_HOSTNAMES (comma-separated)

Other entries of DATABASES and CACHES the app defines are kept. The code is
self-contained (it runs inside the app's interpreter, not Roost's) and
leaves no names behind but underscore-prefixed helpers.
"""

from __future__ import annotations

_TEMPLATE = """

# ---- appended by Roost ([django] append_settings = true) ----
import os as _roost_os


def _roost_database(url):
    from urllib.parse import unquote, urlsplit

    u = urlsplit(url)
    engines = {{"postgres": "postgresql", "postgresql": "postgresql", "pgsql": "postgresql",
               "mysql": "mysql", "sqlite": "sqlite3"}}  # fmt: skip
    engine = "django.db.backends." + engines.get(u.scheme, u.scheme)
    if u.scheme == "sqlite":
        name = u.path[1:] if u.path.startswith("//") else u.path
        return {{"ENGINE": engine, "NAME": unquote(name)}}
    return {{"ENGINE": engine, "NAME": unquote(u.path.lstrip("/")),
            "USER": unquote(u.username or ""), "PASSWORD": unquote(u.password or ""),
            "HOST": u.hostname or "", "PORT": str(u.port or ""),
            "CONN_MAX_AGE": {conn_max_age}}}  # fmt: skip


def _roost_has_redis_cache():
    import importlib.util

    try:
        return (importlib.util.find_spec("redis") is not None
                and importlib.util.find_spec("django.core.cache.backends.redis") is not None)
    except (ImportError, ValueError):
        return False


if _roost_os.environ.get("DATABASE_URL"):
    DATABASES = dict(globals().get("DATABASES") or {{}})
    DATABASES["default"] = _roost_database(_roost_os.environ["DATABASE_URL"])
if _roost_os.environ.get("REDIS_URL") and _roost_has_redis_cache():
    CACHES = dict(globals().get("CACHES") or {{}})
    CACHES["default"] = {{"BACKEND": "django.core.cache.backends.redis.RedisCache",
                         "LOCATION": _roost_os.environ["REDIS_URL"],
                         "KEY_PREFIX": {key_prefix!r}}}  # fmt: skip
if _roost_os.environ.get("ROOST_HOSTNAMES"):
    ALLOWED_HOSTS = [*(globals().get("ALLOWED_HOSTS") or []),
                     *_roost_os.environ["ROOST_HOSTNAMES"].split(",")]  # fmt: skip
# ---- end of Roost settings ----
"""


def render(*, conn_max_age: int = 60, key_prefix: str = "") -> str:
    """Source to append to the app's settings module.

    `conn_max_age`: seconds Django keeps a database connection (0 = per
    request); `key_prefix`: the cache's KEY_PREFIX.
    """
    if conn_max_age < 0:
        raise ValueError("conn_max_age must be >= 0")
    return _TEMPLATE.format(conn_max_age=int(conn_max_age), key_prefix=str(key_prefix))
