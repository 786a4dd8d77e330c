"""The two declared stacks: what builds compiled modules, and what runs them.

The build stack is what a builder host has for source distributions with C
extensions: compilers, pkg-config, the Python headers of its interpreter and
the headers of the libraries Python web apps commonly bind (PostgreSQL's
libpq, libjpeg, libxml2/libxslt, zlib, libffi, OpenSSL). The runner stack is
the shared libraries every runner host has: what an extension module in an
image may link to without carrying it (roost.builder.extcheck checks each
module's NEEDED entries against it at build time). Both are Debian
(bookworm) package names and, for the runner stack, the sonames those
packages provide; `scripts/install` installs both lists (a test keeps them
in step).

A library outside the runner stack is fine when the image carries it (a
manylinux wheel's `<pkg>.libs/`, found through the module's RUNPATH); one
neither carried nor in the stack fails the build, naming it, instead of the
instance crashing on a runner.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

BUILD_STACK_PACKAGES = (
    "build-essential",
    "pkg-config",
    "python3-dev",
    "libpq-dev",
    "libjpeg-dev",
    "zlib1g-dev",
    "libxml2-dev",
    "libxslt1-dev",
    "libffi-dev",
    "libssl-dev",
)

# package -> the sonames it provides (what a NEEDED entry names).
RUNNER_STACK: dict[str, tuple[str, ...]] = {
    "libc6": (
        "libc.so.6", "libm.so.6", "libpthread.so.0", "libdl.so.2", "librt.so.1",
        "libutil.so.1", "libresolv.so.2", "ld-linux-x86-64.so.2", "ld-linux-aarch64.so.1",
    ),
    "libcrypt1": ("libcrypt.so.1",),
    "libgcc-s1": ("libgcc_s.so.1",),
    "libstdc++6": ("libstdc++.so.6",),
    "zlib1g": ("libz.so.1",),
    "libpq5": ("libpq.so.5",),
    "libjpeg62-turbo": ("libjpeg.so.62",),
    "libxml2": ("libxml2.so.2",),
    "libxslt1.1": ("libxslt.so.1", "libexslt.so.0"),
    "libffi8": ("libffi.so.8",),
    "libssl3": ("libssl.so.3", "libcrypto.so.3"),
    "libsqlite3-0": ("libsqlite3.so.0",),
    "libexpat1": ("libexpat.so.1",),
    "libbz2-1.0": ("libbz2.so.1.0",),
    "liblzma5": ("liblzma.so.5",),
    "libuuid1": ("libuuid.so.1",),
}  # fmt: skip

RUNNER_SONAMES = frozenset(s for names in RUNNER_STACK.values() for s in names)
# The interpreter's own library: there wherever the image's interpreter is,
# which the runner checks before it starts an instance.
_LIBPYTHON = re.compile(r"libpython3\.\d+")


def runner_has(soname: str) -> bool:
    return soname in RUNNER_SONAMES or _LIBPYTHON.match(soname) is not None


@dataclass(frozen=True)
class Part:
    """One thing the build stack must have, and the package that brings it."""

    what: str
    package: str
    command: str = ""  # found on PATH
    header: str = ""  # a file under /usr/include


BUILD_STACK = (
    Part("a C compiler", "build-essential", command="cc"),
    Part("a C++ compiler", "build-essential", command="c++"),
    Part("pkg-config", "pkg-config", command="pkg-config"),
    Part("libpq headers", "libpq-dev", header="postgresql/libpq-fe.h"),
    Part("libjpeg headers", "libjpeg-dev", header="jpeglib.h"),
    Part("zlib headers", "zlib1g-dev", header="zlib.h"),
    Part("libxml2 headers", "libxml2-dev", header="libxml2/libxml/parser.h"),
    Part("libxslt headers", "libxslt1-dev", header="libxslt/xslt.h"),
    Part("OpenSSL headers", "libssl-dev", header="openssl/ssl.h"),
)


def python_headers(interpreter: str, minor: str) -> Path:
    """Where `Python.h` of the interpreter at `interpreter` (version `minor`) lives."""
    real = Path(os.path.realpath(interpreter))
    prefix = real.parent.parent if real.parent.name == "bin" else real.parent
    return prefix / "include" / f"python{minor}" / "Python.h"


def missing_build_stack(
    interpreter: str,
    minor: str,
    *,
    which: Callable[[str], str | None],
    exists: Callable[[Path], bool],
    include: Path = Path("/usr/include"),
) -> list[str]:
    """What the build stack lacks here, each with its package (empty: all there)."""
    out = []
    for part in BUILD_STACK:
        found = which(part.command) if part.command else None
        if part.header:
            found = str(include / part.header) if exists(include / part.header) else None
        if found is None:
            out.append(f"{part.what} ({part.package})")
    headers = python_headers(interpreter, minor)
    if not exists(headers):
        out.append(f"Python {minor} headers, {headers} (python{minor}-dev)")
    return out


def log_build_stack(interpreter: str, minor: str, log: Callable[[str], None]) -> None:
    """Before a source build: say what of the build stack this builder lacks."""
    missing = missing_build_stack(interpreter, minor, which=shutil.which, exists=Path.exists)
    if missing:
        log("       warning: this builder's build stack lacks " + ", ".join(missing)
            + ": a package that needs it will not build")  # fmt: skip
