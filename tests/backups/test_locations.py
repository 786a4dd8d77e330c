"""Locations: parsing the settings, how restic reaches an SFTP host, host-key
pins and backupd's SSH key. (Against a real sshd: tests/backups/test_restic.py.)"""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from roost.backups.layout import Layout
from roost.backups.locations import (
    AuthRefused,
    HostKeyPin,
    HostKeyRefused,
    LocationError,
    Unreachable,
    ensure_ssh_key,
    fingerprint,
    known_hosts_name,
    known_keys,
    local_location,
    parse_host_key_pin,
    parse_location,
    restic_env,
    restic_options,
    ssh_argv,
    ssh_failure,
)

S = "ROOST_BACKUP_OFFSITE"


@pytest.mark.parametrize(
    ("value", "kind", "user", "host", "port", "path"),
    [
        ("sftp:backup@10.0.0.5:/srv/roost", "sftp", "backup", "10.0.0.5", 22, "/srv/roost"),
        ("sftp:b@store.example.org:repo", "sftp", "b", "store.example.org", 22, "repo"),
        ("sftp://b@10.0.0.5:2222//srv/roost", "sftp", "b", "10.0.0.5", 2222, "/srv/roost"),
        ("sftp://b@[fd00::5]:2222//srv/r", "sftp", "b", "[fd00::5]", 2222, "/srv/r"),
        ("sftp:b@[fd00::5]:/srv/r", "sftp", "b", "[fd00::5]", 22, "/srv/r"),
        (
            "s3:https://s3.example.org/bucket/roost",
            "s3",
            "",
            "",
            22,
            "https://s3.example.org/bucket/roost",
        ),
        ("/mnt/usb/roost", "local", "", "", 22, "/mnt/usb/roost"),
        ("local:/mnt/usb/roost", "local", "", "", 22, "/mnt/usb/roost"),
    ],
)
def test_locations_from_settings(
    value: str, kind: str, user: str, host: str, port: int, path: str
) -> None:
    loc = parse_location("offsite", f"  {value} ", setting=S)
    assert (loc.kind, loc.user, loc.host, loc.port, loc.path) == (kind, user, host, port, path)
    assert loc.repository == value.removeprefix("local:")


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("", "is empty"),
        ("rest:http://10.0.0.5:8000/", "not a location backupd supports .kind 'rest'"),
        ("b2:bucket:path", "kind 'b2'"),
        ("relative/repo", "not a location backupd supports"),
        ("sftp:10.0.0.5:/srv", "names no user"),
        ("sftp:-oProxyCommand=x@h:/srv", "is not a user name"),
        ("sftp:b@bad_host:/srv", "is not a host name"),
        ("sftp:b@[zz::1]:/srv", "not an IPv6 address"),
        ("sftp://b@h:70000//srv", "port 70000 is out of range"),
        ("sftp:b@h:/srv/my repo", "no spaces"),
        ("sftp:b@h", "is not sftp:USER@HOST:/PATH"),
        ("/srv/a\nb", "control characters"),
        ("s3:", "is not an S3 location"),
    ],
)
def test_bad_locations_are_refused_naming_the_setting(value: str, says: str) -> None:
    with pytest.raises(LocationError, match=says) as err:
        parse_location("offsite", value, setting=S)
    assert S in str(err.value)


def test_local_location_is_the_layouts_repo(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    loc = local_location(layout)
    assert (loc.name, loc.kind, loc.local_dir) == ("local", "local", tmp_path / "backupd" / "repo")
    assert restic_options(loc, layout) == []


def test_restic_reaches_sftp_with_backupds_key_and_pins_only(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    loc = parse_location("offsite", "sftp://backup@10.0.0.5:2222//srv/roost", setting=S)
    argv = ssh_argv(loc, layout)
    assert argv[:3] == ["ssh", "-F", "none"]
    assert argv[-4:] == ["2222", "backup@10.0.0.5", "-s", "sftp"]
    opts = {argv[i + 1] for i, a in enumerate(argv) if a == "-o"}
    assert {
        f"UserKnownHostsFile={layout.known_hosts}",
        "StrictHostKeyChecking=yes",
        "BatchMode=yes",
        "IdentitiesOnly=yes",
        "GlobalKnownHostsFile=/dev/null",
    } <= opts
    assert argv[argv.index("-i") + 1] == str(layout.ssh_key)
    assert restic_options(loc, layout) == ["-o", "sftp.command=" + " ".join(argv)]
    # restic splits sftp.command on spaces and quotes: a data directory with either is refused.
    with pytest.raises(LocationError, match="without spaces"):
        ssh_argv(loc, Layout(tmp_path / "my data"))


def test_s3_gets_the_aws_environment_and_nothing_else() -> None:
    loc = parse_location("offsite", "s3:https://s3.example.org/b", setting=S)
    env = {
        "AWS_ACCESS_KEY_ID": "id",
        "AWS_SECRET_ACCESS_KEY": "k",
        "AWS_DEFAULT_REGION": "eu",
        "HOME": "/root",
    }
    assert restic_env(loc, env) == {k: v for k, v in env.items() if k.startswith("AWS_")}
    with pytest.raises(LocationError, match="set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"):
        restic_env(loc, {"AWS_ACCESS_KEY_ID": "id"})
    sftp = parse_location("offsite", "sftp:b@h:/r", setting=S)
    assert restic_env(sftp, env) == {}


def test_host_key_pins_from_a_setting(tmp_path: Path) -> None:
    key = tmp_path / "host"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    kind, b64, _ = (tmp_path / "host.pub").read_text().split()
    # Our fingerprint is OpenSSH's.
    listed = subprocess.run(
        ["ssh-keygen", "-lf", str(key) + ".pub"], capture_output=True, text=True
    )
    assert fingerprint(b64) == listed.stdout.split()[1]
    A = "ROOST_BACKUP_OFFSITE_HOSTKEY"
    assert parse_host_key_pin("", setting=A) is None
    assert parse_host_key_pin("tofu", setting=A) == HostKeyPin("tofu")
    assert parse_host_key_pin(fingerprint(b64), setting=A) == HostKeyPin(
        "fingerprint", fingerprint(b64)
    )
    for line in (f"{kind} {b64}", f"{kind} {b64} root@host", f"[10.0.0.5]:2222 {kind} {b64}"):
        assert parse_host_key_pin(line, setting=A) == HostKeyPin("key", f"{kind} {b64}")
    for bad in ("SHA256:short", "ssh-ed25519 !!!notbase64", "yes", "MD5:aa:bb"):
        with pytest.raises(LocationError, match=A):
            parse_host_key_pin(bad, setting=A)


def test_known_hosts_entries_are_found_by_name_and_port() -> None:
    loc22 = parse_location("o", "sftp:b@h.example:/r", setting=S)
    loc2222 = parse_location("o", "sftp://b@h.example:2222//r", setting=S)
    assert known_hosts_name(loc22) == "h.example"
    assert known_hosts_name(loc2222) == "[h.example]:2222"
    text = (
        "# comment\n"
        "h.example ssh-ed25519 AAAA1\n"
        "[h.example]:2222,[10.0.0.5]:2222 ssh-ed25519 AAAA2\n"
        "@revoked h.example ssh-rsa AAAA3\n"
        "other ssh-ed25519 AAAA4\n"
    )
    assert known_keys(text, "h.example") == [("ssh-ed25519", "AAAA1")]
    assert known_keys(text, "[h.example]:2222") == [("ssh-ed25519", "AAAA2")]


@pytest.mark.parametrize(
    ("stderr", "error"),
    [
        ("Host key verification failed.", HostKeyRefused),
        ("@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@", HostKeyRefused),
        (
            "No ED25519 host key is known for [h]:22 and you have requested strict checking.",
            HostKeyRefused,
        ),
        ("backup@h: Permission denied (publickey).", AuthRefused),
        ("ssh: connect to host h port 22: Connection refused", Unreachable),
        ("ssh: Could not resolve hostname h: Name or service not known", Unreachable),
    ],
)
def test_what_a_failed_ssh_means(stderr: str, error: type[Exception]) -> None:
    loc = parse_location("offsite", "sftp:b@h:/r", setting=S)
    found = ssh_failure(loc, stderr)
    assert type(found) is error
    assert found.retryable == (error is Unreachable)
    assert stderr in str(found)


async def test_backupds_ssh_key_is_made_once_and_private(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    pub = await ensure_ssh_key(layout)
    assert pub.startswith("ssh-ed25519 ") and "roost-backupd@" in pub
    assert stat.S_IMODE(layout.ssh_key.stat().st_mode) == 0o600
    assert stat.S_IMODE(layout.keys.stat().st_mode) == 0o700
    assert await ensure_ssh_key(layout) == pub  # the same key, not a new one
    (tmp_path / "backupd/keys/id_ed25519.pub").unlink()
    assert (await ensure_ssh_key(layout)).split()[:2] == pub.split()[:2]
