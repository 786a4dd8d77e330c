"""Each backupd's own replication slots (pure names and choices, and the
record of them under Barman's home)."""

from __future__ import annotations

import asyncio
import configparser
import re
from pathlib import Path

import pytest

from roost.backups.barmanconf import (
    ServerConfig,
    own_slot_name,
    render_config,
    slot_name,
    slots_for,
)
from roost.backups.layout import Layout
from roost.backups.slots import OwnSlotBarman
from roost.wire.messages import PgSource

SRC = PgSource(host="10.0.0.41", port=5432, user="roost_backup", password="pw")


def test_two_backupds_have_two_valid_slots_for_one_server() -> None:
    a, b = own_slot_name("10.0.0.51", "sh1"), own_slot_name("10.0.0.52", "sh1")
    assert a != b and a.startswith("barman_sh1_10_0_0_51_")
    long = own_slot_name("B" * 80, "host-" + "x" * 80)
    for name in (a, b, long):
        assert re.fullmatch(r"[a-z0-9_]{1,63}", name), name
    # Names that read alike once cleaned stay apart.
    assert own_slot_name("a-b", "sh1") != own_slot_name("a_b", "sh1")
    assert own_slot_name("B" * 80, "sh1") != own_slot_name("B" * 81, "sh1")


def test_a_server_keeps_its_slot_and_an_old_one_the_shared_name() -> None:
    slots = slots_for(["sh1", "sh1-g2", "sh2"], "bak2", {"sh2": "barman_kept"}, {"sh1"})
    assert slots == {
        "sh1": slot_name("sh1"),  # made by a backupd before named slots
        "sh1-g2": own_slot_name("bak2", "sh1-g2"),
        "sh2": "barman_kept",
    }


def test_the_slot_is_written_as_given_and_a_bad_one_refused() -> None:
    text = render_config(
        home=Path("/h"), log_file=Path("/l"), user="u", passfile=Path("/p"),
        servers=[ServerConfig("sh1", SRC, slot="barman_sh1_bak2_0a1b2c3d"),
                 ServerConfig("sh2", SRC)],
    )  # fmt: skip
    conf = configparser.ConfigParser()
    conf.read_string(text)
    assert conf["sh1"]["slot_name"] == "barman_sh1_bak2_0a1b2c3d"
    assert conf["sh2"]["slot_name"] == slot_name("sh2")
    with pytest.raises(ValueError, match="not a replication slot"):
        render_config(home=Path("/h"), log_file=Path("/l"), user="u", passfile=Path("/p"),
                      servers=[ServerConfig("sh1", SRC, slot="Bad-Slot")])  # fmt: skip


def test_the_choice_is_recorded_and_survives_a_new_name(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.create()
    (layout.barman / "old").mkdir(parents=True)  # an older backupd's server
    barman = OwnSlotBarman(layout, backupd="10.0.0.51")
    first = barman._slots(["old", "new"])
    assert first == {"old": slot_name("old"), "new": own_slot_name("10.0.0.51", "new")}
    (layout.barman / "new").mkdir()  # Barman made it meanwhile
    # The backupd moved to another address: its servers keep their slots.
    again = OwnSlotBarman(layout, backupd="10.0.0.99")
    assert again._slots(["old", "new", "newer"]) == {
        **first,
        "newer": own_slot_name("10.0.0.99", "newer"),
    }


def test_ensure_writes_each_server_s_own_slot(tmp_path: Path) -> None:
    """Through Barman's own configuration, with no cluster to stream from
    (receive-wal is supervised and retried: nothing here waits on it)."""

    async def go() -> str:
        async with OwnSlotBarman(Layout(tmp_path), backupd="bak") as b:
            await b.ensure([ServerConfig("sh1", SRC, retired=True)])
            return b.config_file.read_text()

    conf = configparser.ConfigParser(interpolation=None)
    conf.read_string(asyncio.run(go()))
    assert conf["sh1"]["slot_name"] == own_slot_name("bak", "sh1")
