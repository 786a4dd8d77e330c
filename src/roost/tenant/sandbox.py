"""The sandbox a tenant process runs in: a bubblewrap command line (pure).

Theory of operation. The runner (root) execs `bwrap`, which builds a new
mount namespace whose root is an empty tmpfs, then binds into it only what
the process may see:

  /usr, /etc            read-only (the OS: shells, libc, CA certificates)
  /bin /lib /lib64 /sbin  as the host has them (symlinks into /usr, or binds)
  interpreter prefix    read-only (the Python the image's venv points at:
                        the image's own interpreter layer mounted at the
                        path it was installed at, else the host's, which
                        may live under /root or /opt, which the tenant
                        could not otherwise traverse)
  read-only paths       the image root, the app's home (bundle_config.py)
  writable paths        the app's data directory, a per-instance socket dir
  /proc /dev            fresh ones for the new PID namespace; /tmp a tmpfs

Paths keep their host names inside (the image's venv and the data symlink
hold absolute paths), but nothing else of DATA exists in there: not the
keys, not the state database, not another app's image. Every directory the
sandbox makes on the way to a bind is 0711, so the tenant can walk to what
it was given and nowhere else (bwrap would otherwise copy the host's 0700
from /root), but cannot list (0711): the skeleton of DATA that leads to its
image shows no names.

Namespaces: mount, PID, IPC, UTS (and cgroup where the kernel has it); not
the network, since instances serve on host ports and reach their services
(the firewall, `roost.runner.firewall`, limits that). With its own PID
namespace, the sandbox ends whole: when the command exits, bwrap's init
exits and the kernel kills whatever the tenant left running, setsid or not.

The environment is the spawner's (bwrap, setpriv and env pass it through),
never command-line arguments: another user's `ps` would show those.

Identity: bwrap runs as root (it needs to mount) and starts `setpriv`, which
drops to the app's uid and gid with no supplementary groups, sets
no_new_privs (setuid files are inert; bwrap mounts everything nosuid too),
and clears every capability. Then `env --default-signal` restores default
signal handling: the spawner has bwrap itself ignore the terminal and stop
signals, so that a ^C on a `run` session's terminal, or the TERM that stops
an instance's process group, reaches the tenant's processes but never kills
bwrap (whose death would SIGKILL the sandbox with no grace).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from roost.tenant.identity import Identity

BWRAP = "/usr/bin/bwrap"
SETPRIV = "/usr/bin/setpriv"
ENV = "/usr/bin/env"
# Top-level host directories every sandbox gets, read-only.
SYSTEM_DIRS = ("/usr", "/etc")
# Merged-/usr systems have these as symlinks; older ones as directories.
SYSTEM_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
# The signals the spawner ignores for bwrap's sake (see above); the tenant
# gets every signal's default back before its command starts.
SHIELDED_SIGNALS = ("HUP", "INT", "QUIT", "TERM", "TSTP", "TTIN", "TTOU")


class SandboxError(ValueError):
    """A sandbox that cannot be described (a relative path, an unsafe bind)."""


@dataclass(frozen=True)
class SandboxSpec:
    cwd: Path
    hostname: str = "app"
    readonly: tuple[Path, ...] = ()
    writable: tuple[Path, ...] = ()
    # (source, where the sandbox sees it), read-only: the interpreter an image
    # carries, shown at the path it was installed at (roost.runner.confine).
    mounts: tuple[tuple[Path, Path], ...] = ()
    # Size of the private /tmp tmpfs in bytes (0: the kernel's default; the
    # pages are charged to the tenant's memory cgroup either way).
    tmp_bytes: int = 0
    # Host files and directories inside the system directories the tenant
    # must not reach (a runner hides the build stack's compilers: see
    # roost.tenant.toolmask): files become /dev/null, directories empty.
    hidden_files: tuple[Path, ...] = ()
    hidden_dirs: tuple[Path, ...] = ()


def bwrap_argv(
    spec: SandboxSpec,
    ident: Identity,
    argv: Sequence[str],
    *,
    host_links: dict[str, str | None] | None = None,
    bwrap: str = BWRAP,
) -> list[str]:
    """The full command line: bwrap, its mounts, setpriv, env, then `argv`.

    `host_links` maps each of SYSTEM_LINKS to its symlink target on this host,
    or None when it is a real directory; missing keys do not exist (read with
    `system_links()`; a parameter so that this stays pure).
    """
    if not argv:
        raise SandboxError("no command")
    hidden = (*spec.hidden_files, *spec.hidden_dirs)
    for p in (spec.cwd, *spec.readonly, *spec.writable, *hidden):
        if not p.is_absolute() or ".." in p.parts:
            raise SandboxError(f"sandbox path must be absolute and plain: {p}")
    for p in hidden:
        if not any(p.is_relative_to(d) and p != Path(d) for d in SYSTEM_DIRS):
            raise SandboxError(f"only paths inside {', '.join(SYSTEM_DIRS)} are hidden: {p}")
    out = [
        bwrap,
        "--die-with-parent",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--hostname", spec.hostname,
    ]  # fmt: skip
    for d in SYSTEM_DIRS:
        out += ["--ro-bind", d, d]
    for name, target in sorted((host_links or {}).items()):
        if target is None:
            out += ["--ro-bind", name, name]
        else:
            out += ["--symlink", target, name]
    # Over the system binds: a file gives way to /dev/null (neither executable
    # nor readable as what it was), a directory to an empty read-only tmpfs.
    for path in spec.hidden_files:
        out += ["--ro-bind", "/dev/null", str(path)]
    for path in spec.hidden_dirs:
        out += ["--tmpfs", str(path), "--remount-ro", str(path)]
    out += ["--proc", "/proc", "--dev", "/dev"]
    if spec.tmp_bytes:
        out += ["--size", str(spec.tmp_bytes)]
    out += ["--perms", "1777", "--tmpfs", "/tmp"]
    made: set[Path] = {Path("/"), Path("/tmp"), Path("/proc"), Path("/dev")}
    made.update(Path(d) for d in SYSTEM_DIRS)
    # Shorter paths first, so a writable dir inside a read-only one (the data
    # dir in the app's home) is bound over it, not under it.
    binds = sorted(
        [(p, p, "--ro-bind") for p in spec.readonly]
        + [(src, dest, "--ro-bind") for src, dest in spec.mounts]
        + [(p, p, "--bind") for p in spec.writable],
        key=lambda b: (len(b[1].parts), str(b[1])),
    )
    for source, path, how in binds:
        if not all(p.is_absolute() and ".." not in p.parts for p in (source, path)):
            raise SandboxError(f"sandbox path must be absolute and plain: {source} -> {path}")
        if any(path.is_relative_to(Path(d)) for d in SYSTEM_DIRS):
            raise SandboxError(f"{path} is inside a system directory")
        for parent in reversed(path.parents):
            if parent not in made and not any(parent == b for _, b, _ in binds):
                out += ["--perms", "0711", "--dir", str(parent)]
                made.add(parent)
        out += [how, str(source), str(path)]
        made.add(path)
    out += ["--chdir", str(spec.cwd), "--"]
    out += [
        SETPRIV,
        f"--reuid={ident.uid}",
        f"--regid={ident.gid}",
        "--clear-groups",
        "--no-new-privs",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--",
        ENV,
        "--default-signal",
        "--",
        *argv,
    ]
    return out


def system_links(root: str = "/") -> dict[str, str | None]:
    """Which of SYSTEM_LINKS exist on this host, and where they point."""
    out: dict[str, str | None] = {}
    for name in SYSTEM_LINKS:
        path = os.path.join(root, name.lstrip("/"))
        if os.path.islink(path):
            out[name] = os.readlink(path)
        elif os.path.isdir(path):
            out[name] = None
    return out


def interpreter_prefix(venv: Path) -> Path | None:
    """The installation the venv's python links to (from pyvenv.cfg's `home`).

    None when the venv names none, or names a directory under the system
    directories (already bound).
    """
    try:
        text = (venv / "pyvenv.cfg").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and key.strip() == "home":
            home = Path(os.path.realpath(value.strip()))
            prefix = home.parent if home.name == "bin" else home
            if any(prefix.is_relative_to(d) for d in SYSTEM_DIRS) or prefix == Path("/"):
                return None
            return prefix
    return None
