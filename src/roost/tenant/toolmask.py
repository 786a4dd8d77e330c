"""The build stack a runner hides from its tenants: compilers, assembler, linker.

An image is built on a builder, with the build stack (roost.builder.stacks);
it runs on a runner with the runner stack alone. A runner host may still
have a compiler (a single-host install shares one machine with its
builder), but nothing a tenant runs there may compile: what the image
needs was compiled into it, and a sandbox with a compiler in it would let
an instance build what the build was meant to catch. So every tenant
sandbox of a runner binds /dev/null over each tool below that the host
has (its real file, so every name that links to it goes too) and an empty
directory over gcc's internal programs (cc1, collect2).

`host_build_tools` reads the host (which, realpath); the sandbox's command
line stays pure (roost.tenant.sandbox.SandboxSpec.hidden_files/_dirs).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

BUILD_TOOLS = (
    "cc", "gcc", "c++", "g++", "cpp", "clang", "clang++", "gfortran", "tcc",
    "as", "ld", "ld.bfd", "ld.gold", "ld.lld",
)  # fmt: skip
TOOL_DIRS = ("/usr/lib/gcc", "/usr/libexec/gcc")
# Where tenant commands are looked up (roost.runner.launch.BASE_ENV's PATH).
TENANT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def host_build_tools(path: str = TENANT_PATH) -> tuple[tuple[Path, ...], tuple[Path, ...]]:
    """(files, directories) of the build stack on this host, under /usr."""
    files: dict[Path, None] = {}
    for tool in BUILD_TOOLS:
        found = shutil.which(tool, path=path)
        if found is None:
            continue
        real = Path(os.path.realpath(found))
        if real.is_relative_to("/usr") and real.is_file():
            files[real] = None
    dirs = tuple(Path(d) for d in TOOL_DIRS if os.path.isdir(d))
    return tuple(files), dirs
