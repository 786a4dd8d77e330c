"""What a shared object needs from the dynamic loader: NEEDED, RPATH, RUNPATH (pure).

Read the way the loader reads them, from the program headers: PT_DYNAMIC
holds the dynamic entries, and DT_STRTAB (a virtual address) is turned into
a file offset through the PT_LOAD segment that maps it. Section headers are
not used: `strip` may remove them, the loader never needs them.

The input is untrusted (a package's files, or an app's own): every offset
and size is checked against the file's length and bounded before anything
is read, and a file that does not hold together is an `ElfError`, never an
exception from `struct` or a huge read.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import BinaryIO

MAGIC = b"\x7fELF"
PT_LOAD, PT_DYNAMIC = 1, 2
DT_NULL, DT_NEEDED, DT_STRTAB, DT_STRSZ, DT_RPATH, DT_RUNPATH = 0, 1, 5, 10, 15, 29
# Far beyond any real object's (a few kB): what one file may make us read.
_MAX_TABLE = 4 << 20
_MAX_PHNUM = 4096


class ElfError(ValueError):
    """A file that starts like ELF but does not hold together."""


@dataclass(frozen=True)
class DynamicInfo:
    needed: tuple[str, ...]
    rpath: tuple[str, ...]  # DT_RPATH entries (ignored by the loader when RUNPATH is set)
    runpath: tuple[str, ...]
    machine: int  # e_machine: 62 x86_64, 183 aarch64, ...

    @property
    def search_path(self) -> tuple[str, ...]:
        """The object's own directories, in the loader's order (before the system's)."""
        return self.runpath if self.runpath else self.rpath


def is_elf(head: bytes) -> bool:
    return head[:4] == MAGIC


def read_dynamic(f: BinaryIO, size: int) -> DynamicInfo | None:
    """The dynamic entries of the ELF file `f` (`size` bytes); None when not ELF.

    A static object (no PT_DYNAMIC) needs nothing: empty tuples.
    """
    ident = _read(f, 0, 16, size) if size >= 16 else b""
    if not is_elf(ident):
        return None
    klass, order = ident[4], ident[5]
    if klass not in (1, 2) or order not in (1, 2):
        raise ElfError(f"unknown ELF class {klass} or byte order {order}")
    e = "<" if order == 1 else ">"
    wide = klass == 2
    if wide:
        fields = struct.unpack(e + "HHIQQQIHHHHHH", _read(f, 16, 48, size))
    else:
        fields = struct.unpack(e + "HHIIIIIHHHHHH", _read(f, 16, 36, size))
    machine, phoff, phentsize, phnum = fields[1], fields[4], fields[8], fields[9]
    ph_fmt = e + ("IIQQQQQQ" if wide else "IIIIIIII")
    if phnum > _MAX_PHNUM or (phnum and phentsize < struct.calcsize(ph_fmt)):
        raise ElfError(f"bad program header table ({phnum} entries of {phentsize} bytes)")
    loads: list[tuple[int, int, int]] = []  # (vaddr, offset, filesz)
    dynamic: tuple[int, int] | None = None
    for i in range(phnum):
        raw = _read(f, phoff + i * phentsize, struct.calcsize(ph_fmt), size)
        p = struct.unpack(ph_fmt, raw)
        if wide:
            p_type, p_offset, p_vaddr, p_filesz = p[0], p[2], p[3], p[5]
        else:
            p_type, p_offset, p_vaddr, p_filesz = p[0], p[1], p[2], p[4]
        if p_type == PT_LOAD:
            loads.append((p_vaddr, p_offset, p_filesz))
        elif p_type == PT_DYNAMIC:
            dynamic = (p_offset, p_filesz)
    if dynamic is None:
        return DynamicInfo((), (), (), machine)
    entry = e + ("qQ" if wide else "iI")
    width = struct.calcsize(entry)
    table = _read(f, dynamic[0], min(dynamic[1], _MAX_TABLE), size)
    tags: list[tuple[int, int]] = []
    for off in range(0, len(table) - width + 1, width):
        tag, val = struct.unpack_from(entry, table, off)
        if tag == DT_NULL:
            break
        tags.append((tag, val))
    strtab_addr = next((v for t, v in tags if t == DT_STRTAB), None)
    strsz = next((v for t, v in tags if t == DT_STRSZ), 0)
    wanted = [(t, v) for t, v in tags if t in (DT_NEEDED, DT_RPATH, DT_RUNPATH)]
    if not wanted:
        return DynamicInfo((), (), (), machine)
    if strtab_addr is None or strsz > _MAX_TABLE:
        raise ElfError("dynamic section without a usable string table")
    strtab = _read(f, _file_offset(strtab_addr, loads), strsz, size)

    def text(offset: int) -> str:
        if offset >= len(strtab):
            raise ElfError(f"dynamic string at {offset} is past the string table")
        end = strtab.find(b"\0", offset)
        return strtab[offset : end if end >= 0 else len(strtab)].decode("utf-8", "replace")

    needed = tuple(text(v) for t, v in wanted if t == DT_NEEDED)
    rpath = tuple(p for t, v in wanted if t == DT_RPATH for p in text(v).split(":") if p)
    runpath = tuple(p for t, v in wanted if t == DT_RUNPATH for p in text(v).split(":") if p)
    return DynamicInfo(needed, rpath, runpath, machine)


def _file_offset(vaddr: int, loads: list[tuple[int, int, int]]) -> int:
    for seg_vaddr, seg_offset, filesz in loads:
        if seg_vaddr <= vaddr < seg_vaddr + filesz:
            return vaddr - seg_vaddr + seg_offset
    raise ElfError(f"string table address {vaddr:#x} is in no loaded segment")


def _read(f: BinaryIO, offset: int, length: int, size: int) -> bytes:
    if offset < 0 or length < 0 or offset + length > size:
        raise ElfError(f"{length} bytes at {offset} are past the end of the file ({size} bytes)")
    f.seek(offset)
    data = f.read(length)
    if len(data) != length:
        raise ElfError("file shorter than it says")
    return data
