"""Collect an app's static files into a bundle. Standalone: stdlib only.

The builder copies this file into the build directory and runs it with the
app's own virtualenv Python, as the unprivileged build user (it imports the
app's Django settings, which is running the app's code). Argument: a JSON
config file. Fills the staging directory and writes a routes JSON file into
`out`; the builder packs the staging tree itself (roost.builder.staticpack),
since this process runs the app's code and what it writes is the app's.

Bundle layout: `django/` (collectstatic output, served at STATIC_URL),
`app/<path>` and `admin_media/<path>` for [static] mappings; every text-like
file over 256 bytes gets a precomputed `<name>.gz` when that is smaller. The
bundle holds regular files and directories only: [static] mappings are copied
following symlinks that stay inside the tree being collected and skipping the
others; the builder drops any link left in the staging tree.
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import sys

GZIP_SUFFIXES = (".css", ".js", ".mjs", ".json", ".svg", ".html", ".htm", ".txt", ".xml", ".map",
                 ".ico", ".csv", ".md", ".webmanifest", ".ttf", ".otf", ".eot")  # fmt: skip

WRAPPER = """
import importlib, os
_base = importlib.import_module(os.environ["ROOST_BASE_SETTINGS"])
globals().update({k: v for k, v in vars(_base).items() if k.isupper()})
STATIC_ROOT = os.environ["ROOST_STATIC_ROOT"]
"""


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def collect_django(cfg: dict, staging: str) -> dict | None:
    d = cfg["django"]
    target = os.path.join(staging, "django")
    os.makedirs(target, exist_ok=True)
    tools = cfg["tools"]
    with open(os.path.join(tools, "roost_collect_settings.py"), "w") as fh:
        fh.write(WRAPPER)
    for p in (d["base_dir"], cfg["checkout"], tools):
        sys.path.insert(0, p)
    os.environ["ROOST_BASE_SETTINGS"] = d["settings_module"]
    os.environ["ROOST_STATIC_ROOT"] = target
    os.environ["DJANGO_SETTINGS_MODULE"] = "roost_collect_settings"
    os.chdir(d["base_dir"])
    import django
    from django.conf import settings
    from django.core.management import call_command

    django.setup()
    from django.apps import apps

    if not apps.is_installed("django.contrib.staticfiles"):
        # Heroku's rule too: no staticfiles app, nothing to collect.
        print("django.contrib.staticfiles is not installed: no collectstatic")
        return None
    call_command("collectstatic", interactive=False, verbosity=1)
    url = getattr(settings, "STATIC_URL", None) or "/static/"
    if "://" in url:  # an absolute URL (a CDN): the router serves its path part
        url = "/" + url.split("://", 1)[1].partition("/")[2]
    if not url.startswith("/"):
        url = "/" + url
    if not url.endswith("/"):
        url += "/"
    return {"url_prefix": url, "path": "django", "is_file": False}


def copy_tree(src: str, dst: str, allowed_root: str) -> None:
    """Copy files under src to dst, following only symlinks that stay inside allowed_root."""
    allowed_root = os.path.realpath(allowed_root)

    def inside(p: str) -> bool:
        real = os.path.realpath(p)
        return real == allowed_root or real.startswith(allowed_root + os.sep)

    if not inside(src):
        say(f"static: skipping {src}: it leads outside the app")
        return
    if os.path.isfile(src):
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copyfile(src, dst)
        return
    for dirpath, dirnames, filenames in os.walk(src, followlinks=False):
        rel = os.path.relpath(dirpath, src)
        for name in list(dirnames):
            full = os.path.join(dirpath, name)
            if os.path.islink(full):
                dirnames.remove(name)
                if inside(full):
                    copy_tree(full, os.path.join(dst, rel, name), allowed_root)
        for name in filenames:
            full = os.path.join(dirpath, name)
            if not inside(full) or not os.path.isfile(full):
                continue
            out = os.path.join(dst, rel, name)
            os.makedirs(os.path.dirname(out), exist_ok=True)
            shutil.copyfile(full, out)


def add_gzip_variants(staging: str) -> int:
    n = 0
    for dirpath, _, filenames in os.walk(staging):
        for name in filenames:
            if not name.lower().endswith(GZIP_SUFFIXES):
                continue
            full = os.path.join(dirpath, name)
            if os.path.islink(full) or os.path.exists(full + ".gz"):
                continue
            with open(full, "rb") as fh:
                data = fh.read()
            if len(data) < 256:
                continue
            packed = gzip.compress(data, compresslevel=9, mtime=0)
            if len(packed) < len(data) * 0.9:
                with open(full + ".gz", "wb") as fh:
                    fh.write(packed)
                n += 1
    return n


def main() -> None:
    with open(sys.argv[1]) as fh:
        cfg = json.load(fh)
    staging = cfg["staging"]
    os.makedirs(staging, exist_ok=True)
    routes = []
    if cfg.get("django"):
        route = collect_django(cfg, staging)
        if route is not None:
            routes.append(route)
    for m in cfg["mappings"]:
        copy_tree(m["source"], os.path.join(staging, m["bundle_path"]), m["allowed_root"])
        if os.path.exists(os.path.join(staging, m["bundle_path"])):
            routes.append(
                {"url_prefix": m["url_prefix"], "path": m["bundle_path"], "is_file": m["is_file"]}
            )
    gz = add_gzip_variants(staging)
    with open(os.path.join(cfg["out"], "routes.json"), "w") as fh:
        json.dump({"routes": routes, "gzipped": gz}, fh)
    say(f"static files collected ({gz} gzip variants)")


if __name__ == "__main__":
    main()
