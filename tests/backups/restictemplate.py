"""Initialised restic repositories for tests: copied, not made each time.

`restic init` calibrates its key derivation (scrypt) to cost about half a
second on the machine as it is at that moment, and every later command on
the repository derives the key again from the password: that is most of a
command's CPU, and several seconds of wall time on a loaded machine. restic
0.14 has no setting for it. So a package makes two repositories once (a
"local" one and an "offsite" one sharing its chunker parameters, as
`Repo.init(chunker_from=...)` makes them), wraps each one's master key again
under scrypt parameters that cost a millisecond (`cheap_key`; restic reads
N, r and p from each key file, as it must for keys made elsewhere), and
each test gets copies of them with the same password. restic itself opens
every copy: a key it could not decrypt or authenticate is an error, never a
silent pass. Tests of `init` itself still run `restic init`.

A restic key file (restic's design document, "Keys, Encryption and MAC"):
JSON with the KDF's parameters and salt, and `data`, the master key's JSON
sealed under the user key: IV (16 bytes) | AES-256-CTR ciphertext |
Poly1305-AES MAC (16 bytes, over the ciphertext, keyed by k and r, with the
IV as the nonce). The user key is scrypt(password, salt, N, r, p), 64 bytes:
the AES key, then the MAC's k and r. A key file is named by the SHA-256 of
its bytes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.poly1305 import Poly1305

from roost.backups.layout import Layout
from roost.backups.locations import local_location
from roost.backups.restic import Repo, ensure_password

# The smallest scrypt restic 0.14 accepts (N a power of two above 1, r and p at least 1).
CHEAP = {"N": 2, "r": 1, "p": 1}


def _user_key(password: bytes, key: dict[str, object]) -> tuple[bytes, bytes, bytes]:
    derived = hashlib.scrypt(
        password,
        salt=base64.b64decode(str(key["salt"])),
        n=int(key["N"]),  # type: ignore[call-overload]
        r=int(key["r"]),  # type: ignore[call-overload]
        p=int(key["p"]),  # type: ignore[call-overload]
        maxmem=1 << 30,
        dklen=64,
    )
    return derived[:32], derived[32:48], derived[48:]


def _mac(ciphertext: bytes, iv: bytes, k: bytes, r: bytes) -> bytes:
    s = Cipher(algorithms.AES(k), modes.ECB()).encryptor().update(iv)
    return Poly1305.generate_tag(r + s, ciphertext)


def cheap_key(repo: Path, password_file: Path) -> None:
    """Replace the repository's one key by the same master key under CHEAP scrypt."""
    password = password_file.read_text().rstrip("\r\n").encode()
    [old] = list((repo / "keys").iterdir())
    key = json.loads(old.read_bytes())
    aes, k, r = _user_key(password, key)
    sealed = base64.b64decode(key["data"])
    iv, ciphertext, mac = sealed[:16], sealed[16:-16], sealed[-16:]
    assert _mac(ciphertext, iv, k, r) == mac, "the key does not open with the password"
    master = Cipher(algorithms.AES(aes), modes.CTR(iv)).decryptor().update(ciphertext)

    key |= CHEAP | {"salt": base64.b64encode(os.urandom(64)).decode()}
    aes, k, r = _user_key(password, key)
    iv = os.urandom(16)
    ciphertext = Cipher(algorithms.AES(aes), modes.CTR(iv)).encryptor().update(master)
    key["data"] = base64.b64encode(iv + ciphertext + _mac(ciphertext, iv, k, r)).decode()
    raw = json.dumps(key).encode()
    new = repo / "keys" / hashlib.sha256(raw).hexdigest()
    new.write_bytes(raw)
    new.chmod(old.stat().st_mode)
    old.unlink()


@dataclass(frozen=True)
class Templates:
    """A package's two initialised repositories and their password file."""

    local: Path
    offsite: Path
    password: Path

    def local_repo(
        self, layout: Layout, *, min_free_bytes: int = 1 << 20, restic: str = "restic"
    ) -> Repo:
        """`layout`'s local repository, initialised (a copy of `local`) with its password."""
        self.install(layout)
        shutil.copytree(self.local, layout.local_repo)
        return Repo(local_location(layout), layout, min_free_bytes=min_free_bytes, restic=restic)

    def install(self, layout: Layout) -> None:
        """The repositories' password as `layout`'s (as `ensure_password` keeps it)."""
        layout.keys.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.password, layout.restic_password)
        ensure_password(layout)  # the modes: keys/ 0700, the file 0600

    def offsite_at(self, path: Path) -> None:
        """An initialised repository at `path` (a copy of `offsite`)."""
        shutil.copytree(self.offsite, path)


def make_templates(base: Path) -> Templates:
    holder = Layout(base)
    holder.create()
    password = ensure_password(holder)
    local, offsite = base / "local", base / "offsite"
    argv = ["restic", "--password-file", str(password), "--cache-dir", str(base / "cache")]
    subprocess.run([*argv, "-r", str(local), "init"], check=True, capture_output=True)
    subprocess.run(
        [*argv, "-r", str(offsite), "init", "--from-repo", str(local),
         "--from-password-file", str(password), "--copy-chunker-params"],
        check=True, capture_output=True,
    )  # fmt: skip
    for repo in (local, offsite):
        cheap_key(repo, password)
    return Templates(local, offsite, password)
