"""nft, the command: apply and remove the tables `roost.tenant.firewall` renders.

The thin I/O around the pure renderer. Every call is one `nft -f -`
transaction fed on stdin, bounded by a timeout (a wedged netlink socket must
not stall a daemon's start or stop forever), and a failure is an `NftError`
carrying nft's own message. `argv` is the command to run: tests prefix it
with `ip netns exec NS` so that nothing they apply reaches the machine's
own ruleset.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import tempfile
from collections.abc import Sequence

from roost.proc import spawn
from roost.proc.stop import terminate
from roost.tenant.firewall import removal

TIMEOUT_S = 10.0
# Where Debian puts nft; a daemon's PATH (a service manager's, or a non-login
# shell's) often lacks the sbin directories.
_SBIN = "/usr/local/sbin:/usr/sbin:/sbin"
_COMMENT = re.compile(r'^\s*comment "(.*)"\s*$')


class NftError(RuntimeError):
    """nft is missing, refused the ruleset, or did not answer (the message says which)."""


def locate() -> str:
    """The nft executable, or an NftError that says how to get one."""
    path = os.environ.get("PATH", "")
    found = shutil.which("nft", path=f"{path}:{_SBIN}" if path else _SBIN)
    if found is None:
        raise NftError("nft is not installed (apt-get install nftables)")
    return found


class Nft:
    def __init__(self, argv: Sequence[str], timeout: float = TIMEOUT_S) -> None:
        self.argv = list(argv)
        self.timeout = timeout

    async def apply(self, ruleset: str) -> None:
        """Run `ruleset` as one transaction: all of it takes effect, or none."""
        await self._run(["-f", "-"], ruleset)

    async def comment(self, table: str) -> str | None:
        """The comment of `inet table`; None when there is no such table."""
        # `list tables` first: "no such table" is then an answer, not an error
        # to tell apart from nft's other failures by its wording.
        listed = await self._run(["list", "tables"], "")
        if f"table inet {table}" not in listed.splitlines():
            return None
        text = await self._run(["list", "table", "inet", table], "")
        for line in text.splitlines()[1:3]:
            m = _COMMENT.match(line)
            if m:
                return m.group(1)
        return ""

    async def remove(self, table: str, owner: str | None = None) -> bool:
        """Delete `inet table`; with `owner`, only while its comment is `owner`.

        Returns whether it was removed (False: absent, or someone else's now).
        """
        if owner is not None and await self.comment(table) != owner:
            return False
        await self.apply(removal(table))
        return True

    async def _run(self, args: list[str], stdin: str) -> str:
        argv = [*self.argv, *args]
        # The ruleset goes in as a file, not a pipe: nft may exit (an error,
        # or a command that reads nothing) before a pipe write, and writing
        # to a pipe whose reader is gone fails the caller (seen at start-up).
        with tempfile.TemporaryFile() as source:
            source.write(stdin.encode())
            source.seek(0)
            try:
                # Its own group (a timeout kills all of it), dying with us.
                proc = await spawn.start(
                    argv,
                    stdin=source if stdin else asyncio.subprocess.DEVNULL,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.PIPE,
                )
            except OSError as exc:
                raise NftError(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
        try:
            async with asyncio.timeout(self.timeout):
                out, err = await proc.communicate()
        except TimeoutError:
            await terminate(proc, 1.0)
            raise NftError(f"nft did not answer within {self.timeout:g}s") from None
        finally:
            if proc.returncode is None:  # cancelled: leave no child behind
                await asyncio.shield(terminate(proc, 1.0))
        if proc.returncode != 0:
            message = err.decode(errors="replace").strip() or f"exit status {proc.returncode}"
            raise NftError(f"nft {' '.join(args[:2])}: {message}")
        return out.decode(errors="replace")
