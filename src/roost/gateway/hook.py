"""The pre-receive hook the gateway installs: `python -m roost.gateway.hook`.

git receive-pack runs it once the client's objects are received and before
any ref moves, with "OLD NEW REF" lines on stdin; whatever it writes to
stderr reaches the pushing client as `remote: ...` lines, and a non-zero
exit rejects the push (so a failed build moves no ref).

It picks the deploy branch (main, else master), packs that commit with `git
archive` (the quarantined objects are visible to it through the environment
receive-pack gives it), and hands the archive to the gateway daemon over a
unix socket (ROOST_HOOK_SOCKET), naming the push with the one-time token the
daemon put in ROOST_HOOK_TOKEN. The daemon deploys it and streams the build
log back line by line; the last line carries the exit status.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

DEPLOY_BRANCHES = ("refs/heads/main", "refs/heads/master")
ZERO = "0" * 40
EXIT_PREFIX = "\x00exit "


def pick(updates: list[tuple[str, str, str]]) -> tuple[str, str] | None:
    """(ref, sha) to deploy: main wins over master; deletions deploy nothing."""
    for branch in DEPLOY_BRANCHES:
        for _old, new, ref in updates:
            if ref == branch and new.strip("0"):
                return ref, new
    return None


def main() -> int:
    updates = []
    for line in sys.stdin:
        parts = line.split()
        if len(parts) == 3:
            updates.append((parts[0], parts[1], parts[2]))
    chosen = pick(updates)
    if chosen is None:
        names = ", ".join(ref.removeprefix("refs/heads/") for _, _, ref in updates)
        print(f"pushed {names}; only main or master is deployed", file=sys.stderr)
        return 0
    ref, sha = chosen
    archive = subprocess.run(
        ["git", "archive", "--format=tar.gz", sha], capture_output=True, check=False
    )
    if archive.returncode != 0:
        print(f"git archive failed: {archive.stderr.decode(errors='replace')}", file=sys.stderr)
        return 1
    header = {
        "token": os.environ.get("ROOST_HOOK_TOKEN", ""),
        "ref": ref,
        "sha": sha,
        "size": len(archive.stdout),
    }
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(os.environ["ROOST_HOOK_SOCKET"])
        except (KeyError, OSError) as exc:
            print(f"cannot reach the gateway: {exc}", file=sys.stderr)
            return 1
        s.sendall(json.dumps(header).encode() + b"\n" + archive.stdout)
        status = 1
        with s.makefile("r", encoding="utf-8", errors="replace") as replies:
            for line in replies:
                if line.startswith(EXIT_PREFIX):
                    status = int(line[len(EXIT_PREFIX) :].strip() or 1)
                    break
                sys.stderr.write(line)
                sys.stderr.flush()
    return status


if __name__ == "__main__":
    sys.exit(main())
