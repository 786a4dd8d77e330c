"""The restic adapter against real restic 0.14: a local repository, and an
offsite one over SFTP served by a real OpenSSH sshd (tests/backups/sshd.py).
Tests not about `init` start from copies of initialised repositories
(`restic_templates`, tests/backups/restictemplate.py)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import shutil
import stat
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from roost.backups.daemon import open_now
from roost.backups.jobs import Repos
from roost.backups.layout import Layout
from roost.backups.locations import (
    HostKeyPin,
    ensure_ssh_key,
    fingerprint,
    local_location,
    parse_host_key_pin,
    parse_location,
    pin_host_key,
)
from roost.backups.restic import (
    AuthRefused,
    HostKeyRefused,
    NoRoom,
    PartialBackup,
    Repo,
    RepoError,
    Unreachable,
    WrongPassword,
)
from roost.backups.retention import Policy, keep, restic_forget_flags
from roost.settings import Settings
from tests.backups.restictemplate import Templates, cheap_key
from tests.backups.sshd import SftpServer, keygen, sftp_server
from tests.conftest import free_port

PIN = "ROOST_BACKUP_OFFSITE_HOSTKEY"
MiB = 1 << 20


@pytest.fixture
def tmp_path(disk_path: Path) -> Path:
    """The repositories and trees on the package's tmpfs (conftest's disk)."""
    return disk_path


def _layout(base: Path) -> Layout:
    layout = Layout(base)
    layout.create()
    return layout


def _local(layout: Layout) -> Repo:
    return Repo(local_location(layout), layout, min_free_bytes=MiB)


def _tree(root: Path, seed: int = 1) -> Path:
    """A staging directory: nested files, binary data, an empty file, a link."""
    rnd = random.Random(seed)
    (root / "db").mkdir(parents=True)
    (root / "db" / "dump.bin").write_bytes(rnd.randbytes(300_000))
    (root / "files" / "sub").mkdir(parents=True)
    (root / "files" / "sub" / "a.txt").write_text(f"hello {seed}\n")
    (root / "files" / "empty").write_bytes(b"")
    (root / "files" / "link").symlink_to("sub/a.txt")
    (root / "facts.json").write_text(f'{{"seed": {seed}}}\n')
    return root


def _without_caps(tmp_path: Path, layout: Layout, templates: Templates) -> Repo:
    """A local repository run by restic as root without the capability to
    read what it does not own: an unreadable file is what it cannot read."""
    wrapper = tmp_path / "restic-nocaps"
    wrapper.write_text(
        "#!/bin/sh\nexec setpriv --inh-caps=-all "
        '--bounding-set=-dac_override,-dac_read_search restic "$@"\n'
    )
    wrapper.chmod(0o755)
    return templates.local_repo(layout, restic=str(wrapper))


def _digest(root: Path) -> dict[str, str]:
    """Every entry under root: a file's sha256, a link's target."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        if p.is_symlink():
            out[rel] = "-> " + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# ---------------------------------------------------------------- local repository


async def test_backup_list_restore_and_dump_on_a_local_repository(tmp_path: Path) -> None:
    layout = _layout(tmp_path / "data")
    repo = _local(layout)
    assert await repo.init() is True
    assert await repo.init() is False  # idempotent
    assert stat.S_IMODE(layout.restic_password.stat().st_mode) == 0o600
    assert len(layout.restic_password.read_text().strip()) >= 40
    # A dozen commands follow, each deriving the key init calibrated to ~0.5 s.
    cheap_key(layout.local_repo, layout.restic_password)

    shop = _tree(tmp_path / "staging" / "shop", seed=1)
    blog = _tree(tmp_path / "staging" / "blog", seed=2)
    sid = (await repo.snapshot(shop, tags=["app=shop", "kind=data", "id=data-1"], host="bk1")).id
    await repo.snapshot(blog, tags=["app=blog", "kind=data", "id=data-2"], host="bk1")
    assert len(sid) == 64

    [snap] = await repo.snapshots(["app=shop", "kind=data"])
    assert snap.id == sid and snap.tag("id") == "data-1" and snap.tag("app") == "shop"
    assert snap.hostname == "bk1" and snap.time.tzinfo is not None
    assert len(await repo.snapshots()) == 2
    assert await repo.snapshots(["app=shop", "kind=redis"]) == []

    target = tmp_path / "restored"
    await repo.restore(sid, target)
    assert _digest(target) == _digest(shop)  # relative layout, bytes and links equal
    assert await repo.dump(sid, "facts.json") == b'{"seed": 1}\n'
    stats = await repo.stats()
    assert stats.snapshots == 2 and stats.total_size > 0
    assert await repo.check(read_data=True) == []


async def test_the_password_is_never_on_a_command_line_nor_in_the_environment(
    tmp_path: Path,
) -> None:
    layout = _layout(tmp_path / "data")
    seen = tmp_path / "seen"
    wrapper = tmp_path / "restic-wrapper"
    wrapper.write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$@" >> {seen}\nenv >> {seen}\nexec restic "$@"\n'
    )
    wrapper.chmod(0o755)
    repo = Repo(local_location(layout), layout, min_free_bytes=MiB, restic=str(wrapper))
    await repo.init()
    cheap_key(layout.local_repo, layout.restic_password)  # as in the test above
    sid = (await repo.snapshot(_tree(tmp_path / "s"), tags=["app=a"])).id
    await repo.restore(sid, tmp_path / "r")
    await repo.check()
    password = layout.restic_password.read_text().strip()
    assert "--password-file" in seen.read_text() and "backup" in seen.read_text()
    assert password not in seen.read_text()


def _commands(seen: Path) -> list[str]:
    """The restic command of each line the wrapper logged (after the options
    `Repo._argv` puts first, ending with the cache directory)."""
    out = []
    for line in seen.read_text().splitlines():
        words = line.split()
        out.append(words[words.index("--cache-dir") + 2])
    return out


async def test_a_fresh_local_repository_is_made_by_the_first_command_that_needs_it(
    tmp_path: Path,
) -> None:
    """backupd's start leaves a local repository with nothing there to its
    first command: `restic init` calibrates its key derivation, 1-2 s of CPU
    at every start of a platform, most of which never back up before they
    stop. Two commands at once make it once; an empty one lists nothing
    without restic."""
    layout = _layout(tmp_path / "data")
    seen = tmp_path / "seen"
    wrapper = tmp_path / "restic-wrapper"
    wrapper.write_text(f'#!/bin/sh\necho "$*" >> {seen}\nexec restic "$@"\n')
    wrapper.chmod(0o755)
    repo = Repo(local_location(layout), layout, min_free_bytes=MiB, restic=str(wrapper))
    repo.opened = asyncio.Event()
    await open_now(Repos(repo), layout, Settings())
    assert repo.init_pending and layout.restic_password.exists()
    assert not seen.exists()  # no restic ran at the start
    assert await repo.snapshots() == []
    assert not seen.exists()

    tree = _tree(tmp_path / "s")
    a, b = await asyncio.gather(
        repo.snapshot(tree, tags=["app=a"]), repo.snapshot(tree, tags=["app=b"])
    )
    commands = _commands(seen)
    assert commands.count("init") == 1 and commands[0] == "init", commands
    assert not repo.init_pending
    assert {s.id for s in await repo.snapshots()} == {a.id, b.id}
    # A restore asks restic for the size only when the caller does not know it.
    await repo.restore(a.id, tmp_path / "r1", size=MiB)
    await repo.restore(b.id, tmp_path / "r2")
    commands = _commands(seen)
    assert commands[-3:] == ["restore", "stats", "restore"], commands
    # Something there now: the next start opens it, as before.
    assert Repo(local_location(layout), layout).defer_init() is False


async def test_flipped_bytes_in_a_pack_are_a_problem_check_reports(
    tmp_path: Path, restic_templates: Templates
) -> None:
    layout = _layout(tmp_path / "data")
    repo = restic_templates.local_repo(layout)
    await repo.snapshot(_tree(tmp_path / "s"), tags=["app=a"])
    packs = sorted((layout.local_repo / "data").rglob("*"), key=lambda p: -p.stat().st_size)
    pack = next(p for p in packs if p.is_file())
    pack.chmod(0o600)
    data = bytearray(pack.read_bytes())
    for i in range(100, 110):
        data[i] ^= 0xFF
    pack.write_bytes(bytes(data))

    assert await repo.check() == []  # the structure is intact: only reading the data shows it
    problems = await repo.check(read_data=True)
    assert problems and any(pack.name in p for p in problems), problems
    assert await repo.check(read_data="100%")


async def test_a_command_waits_until_the_repository_is_opened(
    tmp_path: Path, restic_templates: Templates
) -> None:
    """backupd opens its repositories beside serving (`Repo.opened`): a
    command asked for meanwhile waits for the opening, then runs."""
    layout = _layout(tmp_path / "data")
    repo = restic_templates.local_repo(layout)
    repo.opened = asyncio.Event()
    listing = asyncio.ensure_future(repo.snapshots())
    await asyncio.sleep(1.0)
    assert not listing.done()  # without the wait, a listing of an empty repository: []
    assert await repo.init() is False  # init's own commands do not wait
    repo.set_opened()
    assert await asyncio.wait_for(listing, 60) == []


async def test_no_room_refuses_before_writing_and_makes_no_snapshot(
    tmp_path: Path, restic_templates: Templates
) -> None:
    layout = _layout(tmp_path / "data")
    repo = restic_templates.local_repo(layout)
    sid = (await repo.snapshot(_tree(tmp_path / "s"), tags=["app=a"])).id
    # More than any disk has: the machine's other writers cannot make room meanwhile
    # (free + 1 did, once, when another process freed space between the checks).
    whole = shutil.disk_usage(tmp_path).total
    cramped = Repo(repo.location, layout, min_free_bytes=whole * 1024)
    with pytest.raises(NoRoom, match="nothing was written"):
        await cramped.snapshot(tmp_path / "s", tags=["app=a"])
    with pytest.raises(NoRoom):
        await cramped.restore(sid, tmp_path / "r")
    with pytest.raises(NoRoom):  # its size known (a backup's record): checked the same
        await cramped.restore(sid, tmp_path / "r", size=1)
    assert [s.id for s in await repo.snapshots()] == [sid]
    assert not (tmp_path / "r").exists()


async def test_a_backup_that_could_not_read_everything_is_not_kept(
    tmp_path: Path, restic_templates: Templates
) -> None:
    layout = _layout(tmp_path / "data")
    repo = _without_caps(tmp_path, layout, restic_templates)
    src = _tree(tmp_path / "s")
    (src / "files" / "secret").write_text("x")
    (src / "files" / "secret").chmod(0)
    os.chown(src / "files" / "secret", 1, 1)
    with pytest.raises(PartialBackup, match="could not be read"):
        await repo.snapshot(src, tags=["app=a"])
    assert await repo.snapshots() == []
    with pytest.raises(FileNotFoundError, match="missing"):
        await repo.snapshot(src, ["db", "nope"], tags=["app=a"])


async def test_what_is_excluded_is_neither_read_nor_kept(
    tmp_path: Path, restic_templates: Templates
) -> None:
    # Barman's streaming/ under writes: files listed there are gone (renamed,
    # archived) when restic reads them. An unreadable file stands in for one
    # that vanished (restic says both alike: exit 3, a partial backup).
    layout = _layout(tmp_path / "data")
    repo = _without_caps(tmp_path, layout, restic_templates)
    src = _tree(tmp_path / "s")
    (src / "streaming").mkdir()
    busy = src / "streaming" / "000000010000000200000020.partial"
    busy.write_text("x")
    busy.chmod(0)
    os.chown(busy, 1, 1)
    with pytest.raises(PartialBackup, match="could not be read"):
        await repo.snapshot(src, tags=["app=a"])
    made = await repo.snapshot(src, tags=["app=a"], exclude=[src / "streaming" / "*"])
    target = tmp_path / "restored"
    await repo.restore(made.id, target)
    assert (target / "streaming").is_dir() and not any((target / "streaming").iterdir())
    assert (target / "db" / "dump.bin").read_bytes() == (src / "db" / "dump.bin").read_bytes()
    with pytest.raises(ValueError, match="absolute"):
        await repo.snapshot(src, tags=["app=a"], exclude=[Path("streaming/*")])


async def test_without_backupds_password_the_repository_does_not_open(
    tmp_path: Path, restic_templates: Templates
) -> None:
    layout = _layout(tmp_path / "data")
    repo = restic_templates.local_repo(layout)
    other = _layout(tmp_path / "other")
    other.restic_password.write_text("guess\n")
    intruder = Repo(repo.location, other)
    for attempt in (intruder.snapshots(), intruder.remove(["latest"]), intruder.init()):
        with pytest.raises(WrongPassword):
            await attempt
    nopw = _layout(tmp_path / "nopw")
    with pytest.raises(RepoError, match="no repository password"):
        await Repo(repo.location, nopw).snapshots()


async def test_forget_keeps_exactly_what_keep_says(
    tmp_path: Path, restic_templates: Templates
) -> None:
    layout = _layout(tmp_path / "data")
    repo = restic_templates.local_repo(layout)
    src = _tree(tmp_path / "s")
    now = datetime.now(UTC).replace(microsecond=0)
    rnd = random.Random(15)
    # 14 months of irregular history (gaps, several a day), and one dated ahead.
    hours = sorted({rnd.randrange(0, 24 * 420) for _ in range(18)} | {0, 1, 2, 30, 31})
    times = [now - timedelta(hours=h, minutes=rnd.randrange(60)) for h in hours]
    times.append(now + timedelta(days=20))
    # One at a time: restic 0.14 checking for other locks can list the lock of
    # a command that then ends, and retries loading that vanished file for
    # ~40 s. The template's key makes each backup a fraction of a second.
    made = {}
    for i, t in enumerate(times):
        made[(await repo.snapshot(src, tags=["app=a", "kind=data", f"id={i}"], time=t)).id] = t
    await repo.snapshot(src, tags=["app=b", "kind=data"], time=now - timedelta(days=400))

    policy = Policy(pitr_days=3, daily=5, weekly=4, monthly=6)
    expected = keep(list(made.items()), policy, datetime.now(UTC))
    assert 10 < len(expected) < len(made)
    flags = restic_forget_flags(policy)
    planned = await repo.forget(["app=a", "kind=data"], flags, dry_run=True)
    assert set(planned.kept) == expected and set(planned.removed) == set(made) - expected
    await repo.forget(["app=a", "kind=data"], flags)
    assert {s.id for s in await repo.snapshots(["app=a"])} == expected
    assert len(await repo.snapshots(["app=b"])) == 1  # another group is left alone
    await repo.prune()
    assert await repo.check() == []


# ---------------------------------------------------------------- offsite over SFTP


@pytest.fixture
def sshd() -> Iterator[SftpServer]:
    with sftp_server() as server:
        yield server


async def _offsite(layout: Layout, server: SftpServer, pin: HostKeyPin | None) -> Repo:
    server.authorize(await ensure_ssh_key(layout))
    loc = parse_location(
        "offsite", f"sftp://root@{server.host}:{server.port}//repos/roost", setting="S"
    )
    await pin_host_key(loc, layout, pin, setting=PIN)
    return Repo(loc, layout)


async def test_init_backup_copy_and_restore_over_sftp(
    tmp_path: Path, sshd: SftpServer, restic_templates: Templates
) -> None:
    layout = _layout(tmp_path / "data")
    local = restic_templates.local_repo(layout)
    offsite = await _offsite(layout, sshd, parse_host_key_pin(sshd.host_key_pub, setting=PIN))
    assert await offsite.init(chunker_from=local) is True
    assert await offsite.init() is False
    assert (sshd.on_disk("/repos/roost") / "config").is_file()
    # A dozen commands over SFTP follow, each deriving the key init calibrated to ~0.5 s.
    cheap_key(sshd.on_disk("/repos/roost"), layout.restic_password)

    shop = _tree(tmp_path / "s1", seed=1)
    a = (await local.snapshot(shop, tags=["app=shop", "kind=data", "id=d1"])).id
    b = (await local.snapshot(_tree(tmp_path / "s2", seed=2), tags=["app=blog", "kind=data"])).id
    copied = await local.copy(offsite, [a[:8], b])
    assert set(copied) == {a, b}
    there = {s.id: s for s in await offsite.snapshots()}
    assert set(there) == set(copied.values())
    assert there[copied[a]].original == a and there[copied[a]].tag("id") == "d1"
    assert await local.copy(offsite, [a]) == {a: copied[a]}  # already there: not again
    assert len(await offsite.snapshots()) == 2

    await offsite.restore(copied[a], tmp_path / "back")
    assert _digest(tmp_path / "back") == _digest(shop)
    direct = (await offsite.snapshot(shop, tags=["app=shop", "kind=data", "id=d2"])).id
    assert direct in {s.id for s in await offsite.snapshots(["id=d2"])}
    assert await offsite.check(read_data=True) == []


async def test_host_keys_are_pinned_and_a_changed_one_is_refused(
    tmp_path: Path, sshd: SftpServer, restic_templates: Templates
) -> None:
    layout = _layout(tmp_path / "data")
    restic_templates.install(layout)
    restic_templates.offsite_at(sshd.on_disk("/repos/roost"))
    with pytest.raises(HostKeyRefused, match=f"no host key pinned.*set {PIN}"):
        await _offsite(layout, sshd, None)
    # Nothing pinned: restic's ssh refuses the host rather than asking.
    unpinned = Repo(
        parse_location("o", f"sftp://root@127.0.0.1:{sshd.port}//repos/r", setting="S"), layout
    )
    with pytest.raises(HostKeyRefused):
        await unpinned.init()
    # Trust on first use records the key the host offers ...
    offsite = await _offsite(layout, sshd, HostKeyPin("tofu"))
    assert layout.known_hosts.read_text() == sshd.known_hosts_line() + "\n"
    assert stat.S_IMODE(layout.known_hosts.stat().st_mode) == 0o600
    await offsite.init()
    # ... and checks it ever after: a host with a new key is refused.
    sshd.stop()
    sshd.new_host_key()
    sshd.start()
    with pytest.raises(HostKeyRefused, match="not the pinned one"):
        await offsite.snapshots()
    assert await _offsite(layout, sshd, HostKeyPin("tofu"))  # tofu never replaces a pin
    with pytest.raises(HostKeyRefused):
        await offsite.snapshots()
    new_fp = fingerprint(sshd.host_key_pub.split()[1])
    with pytest.raises(HostKeyRefused, match="pins SHA256"):
        await _offsite(layout, sshd, HostKeyPin("fingerprint", new_fp))
    # The operator removes the old line and pins the new key by its fingerprint.
    layout.known_hosts.unlink()
    await _offsite(layout, sshd, HostKeyPin("fingerprint", new_fp))
    assert layout.known_hosts.read_text() == sshd.known_hosts_line() + "\n"
    await offsite.init()


async def test_a_wrong_fingerprint_is_refused_and_records_nothing(
    tmp_path: Path, sshd: SftpServer
) -> None:
    layout = _layout(tmp_path / "data")
    wrong = fingerprint(keygen(tmp_path / "k").split()[1])
    with pytest.raises(HostKeyRefused, match="offers no key with fingerprint"):
        await _offsite(layout, sshd, HostKeyPin("fingerprint", wrong))
    assert not layout.known_hosts.exists()


async def test_an_unreachable_location_is_a_retryable_error(
    tmp_path: Path, sshd: SftpServer, restic_templates: Templates
) -> None:
    layout = _layout(tmp_path / "data")
    local = restic_templates.local_repo(layout)
    restic_templates.offsite_at(sshd.on_disk("/repos/roost"))
    sid = (await local.snapshot(_tree(tmp_path / "s"), tags=["app=a"])).id
    offsite = await _offsite(layout, sshd, parse_host_key_pin(sshd.host_key_pub, setting=PIN))
    await offsite.init(chunker_from=local)
    sshd.stop()  # the offsite host goes away
    for attempt in (offsite.snapshots(), local.copy(offsite, [sid]), offsite.check()):
        with pytest.raises(Unreachable) as err:
            await attempt
        assert err.value.retryable and "Connection refused" in str(err.value)
    # Nothing listening at all on that address: the same.
    port = free_port()
    gone = parse_location("o", f"sftp://root@127.0.0.1:{port}//repos/roost", setting="S")
    await pin_host_key(
        gone, layout, parse_host_key_pin(sshd.host_key_pub, setting=PIN), setting=PIN
    )
    with pytest.raises(Unreachable):
        await Repo(gone, layout).init()


async def test_the_offsite_repository_needs_backupds_key_and_password(
    tmp_path: Path, sshd: SftpServer, restic_templates: Templates
) -> None:
    layout = _layout(tmp_path / "data")
    restic_templates.install(layout)
    restic_templates.offsite_at(sshd.on_disk("/repos/roost"))
    offsite = await _offsite(layout, sshd, parse_host_key_pin(sshd.host_key_pub, setting=PIN))
    await offsite.init()
    await offsite.snapshot(_tree(tmp_path / "s"), tags=["app=a"])
    # A servicehost's (or anyone's) own key, with the host pinned and even the password:
    intruder = _layout(tmp_path / "intruder")
    await ensure_ssh_key(intruder)
    shutil.copy(layout.known_hosts, intruder.known_hosts)
    shutil.copy(layout.restic_password, intruder.restic_password)
    stranger = Repo(offsite.location, intruder)
    for attempt in (stranger.snapshots(), stranger.remove(["latest"]), stranger.prune()):
        with pytest.raises(AuthRefused, match="refused backupd's key"):
            await attempt
    # backupd's key without the password reads nothing.
    layout.restic_password.write_text("guess\n")
    with pytest.raises(WrongPassword):
        await offsite.snapshots()
    shutil.copy(intruder.restic_password, layout.restic_password)
    assert len(await offsite.snapshots()) == 1
