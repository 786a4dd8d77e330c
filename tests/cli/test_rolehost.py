"""Several roles in one process (roost.cli.rolehost, `roost roles`): each
role's own signal handlers kept beside the others', SIGUSR2 hands over what
hands over and stops the rest, a role that fails ends them all (tenants
handed over) with its status, backupd on a thread of its own; and
`roost up`'s pure side of it (roost.cli.uphost). In-process: fake roles
through the real `daemonize.run_daemon` seam, real signals."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from roost import daemonize
from roost.cli import rolehost, uphost
from roost.cli.reload import Step
from roost.cli.rolehost import HOST, Host, SignalFan, parse_specs
from roost.proc import upstate
from roost.proc.exits import ConfigError, ExitCode
from roost.proc.supervise import Program


@pytest.fixture(autouse=True)
def _handlers_restored() -> Iterator[None]:
    before = {sig: signal.getsignal(sig) for sig in rolehost.SIGNALS}
    yield
    for sig, handler in before.items():
        signal.signal(sig, handler)
    daemonize.hosted = None


class Fakes:
    """Three fake roles: a runner that hands over on SIGUSR2 (its own
    handler, as roost.runner's), a builder, a backupd (own thread)."""

    def __init__(self, signal_to_send: int | None, builder_fails: bool = False) -> None:
        self.signal_to_send = signal_to_send
        self.builder_fails = builder_fails
        self.events: list[str] = []
        self.runner_ready = threading.Event()
        self.backupd_ready = threading.Event()
        self.backupd_thread = ""

    def start(self, role: str, data: Path, port: int | None) -> None:
        mains: dict[str, Callable[[asyncio.Event], object]] = {
            "runner": self.runner,
            "builder": self.builder,
            "backupd": self.backupd,
        }
        daemonize.run_daemon(role, mains[role])  # type: ignore[arg-type]

    async def runner(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()

        def hand_over() -> None:
            self.events.append("runner handed over")
            stop.set()

        loop.add_signal_handler(signal.SIGUSR2, hand_over)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        self.runner_ready.set()
        await stop.wait()
        loop.remove_signal_handler(signal.SIGUSR2)
        loop.remove_signal_handler(signal.SIGTERM)
        self.events.append("runner stopped")

    async def builder(self, stop: asyncio.Event) -> None:
        await asyncio.to_thread(self.runner_ready.wait, 10)
        await asyncio.to_thread(self.backupd_ready.wait, 10)
        if self.builder_fails:
            raise ConfigError("the builder's setting is wrong")
        if self.signal_to_send is not None:
            os.kill(os.getpid(), self.signal_to_send)
        await stop.wait()
        self.events.append("builder stopped")

    async def backupd(self, stop: asyncio.Event) -> None:
        self.backupd_thread = threading.current_thread().name
        self.backupd_ready.set()
        await stop.wait()
        self.events.append("backupd stopped")


def host_with(fakes: Fakes, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Host:
    monkeypatch.setattr(rolehost, "start_role", fakes.start)
    return Host(tmp_path, [("builder", None), ("runner", 9100), ("backupd", None)])


def test_sigusr2_hands_the_runner_over_and_stops_the_others(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fakes = Fakes(signal.SIGUSR2)
    host_with(fakes, monkeypatch, tmp_path).run()  # returns: no SystemExit
    assert sorted(fakes.events) == [
        "backupd stopped",
        "builder stopped",
        "runner handed over",
        "runner stopped",
    ]
    assert fakes.backupd_thread == "backupd"  # its own thread, not the loop's
    assert daemonize.hosted is None


def test_sigterm_stops_every_role_and_hands_nothing_over(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fakes = Fakes(signal.SIGTERM)
    host_with(fakes, monkeypatch, tmp_path).run()
    assert sorted(fakes.events) == ["backupd stopped", "builder stopped", "runner stopped"]


def test_a_failing_role_ends_the_process_with_its_status_tenants_handed_over(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fakes = Fakes(None, builder_fails=True)
    with pytest.raises(SystemExit) as ended:
        host_with(fakes, monkeypatch, tmp_path).run()
    assert ended.value.code == ExitCode.CONFIG_ERROR
    assert sorted(fakes.events) == ["backupd stopped", "runner handed over", "runner stopped"]
    assert capsys.readouterr().err.splitlines()[-1] == "builder: the builder's setting is wrong"


def test_parse_specs() -> None:
    assert parse_specs(["controller", "runner=9100"]) == [("controller", None), ("runner", 9100)]
    for bad, why in (
        ([], "no role"),
        (["router"], "not a role that can share"),
        (["runner", "runner=1"], "named twice"),
        (["runner=http"], "not a port"),
        (["runner=70000"], "not a port"),
    ):
        with pytest.raises(ValueError, match=why):
            parse_specs(bad)


def test_signal_fan_calls_each_roles_handler_and_names_the_rest() -> None:
    fan, called = SignalFan(), []
    fan.add(signal.SIGUSR2, "runner", called.append, ("runner",))
    fan.add(signal.SIGUSR2, "servicehost", called.append, ("servicehost",))
    fan.add(signal.SIGUSR2, "runner", called.append, ("runner again",))  # replaces its own
    assert fan.fire(signal.SIGUSR2, ["controller", "runner", "servicehost"]) == ["controller"]
    assert called == ["runner again", "servicehost"]
    assert fan.remove(signal.SIGUSR2, "runner") and not fan.remove(signal.SIGUSR2, "runner")
    assert fan.fire(signal.SIGTERM, ["runner"]) == ["runner"]


def _program(name: str) -> Program:
    async def start() -> object:
        raise AssertionError

    return Program(name, start)  # type: ignore[arg-type]


def test_roost_up_folds_each_group_and_reports_each_role() -> None:
    names = ["controller", "builder", "runner", "router", "gateway", "servicehost", "backupd"]
    groups = uphost.groups_of(names, uphost.parse_groups("controller+runner,builder+backupd"))
    assert groups == {HOST: ["controller", "runner"], "roles2": ["builder", "backupd"]}
    # Without a servicehost (its servers not installed) its group is one role: not made.
    assert uphost.groups_of(["controller", "runner"], [["runner", "servicehost"]]) == {}
    programs = [_program(n) for n in names]
    hosts = {name: _program(name) for name in groups}
    assert [p.name for p in uphost.fold(programs, hosts, groups)] == [
        HOST,
        "roles2",
        "router",
        "gateway",
        "servicehost",
    ]
    metrics = {
        "controller": "https://127.0.0.1:8000/metrics",
        "runner": "http://127.0.0.1:9100/metrics",
    }
    assert uphost.specs(["controller", "runner", "gateway"], metrics) == [
        "controller",
        "runner=9100",
        "gateway",
    ]

    up = upstate.RoleStatus(state="up", pid=42)
    other = upstate.RoleStatus(state="up", pid=44)
    router = upstate.RoleStatus(state="up", pid=7)
    states = uphost.expand_states({HOST: up, "roles2": other, "router": router}, groups)
    assert list(states) == ["controller", "runner", "builder", "backupd", "router"]
    assert states["runner"].pid == 42 and states["backupd"].pid == 44
    assert uphost.expand_states({"router": up}, {}) == {"router": up}

    status = upstate.ReloadStatus(started_at=1.0, replaced={HOST: [42, 43], "router": [7, 8]})
    expanded = uphost.expand_reload(status, groups)
    assert expanded is not None
    assert expanded.replaced == {"controller": [42, 43], "runner": [42, 43], "router": [7, 8]}
    assert uphost.expand_reload(None, groups) is None

    steps = [Step(HOST, signal.SIGTERM), Step("router", signal.SIGUSR2, overlap=True)]
    assert uphost.host_steps(steps, groups) == [
        Step(HOST, signal.SIGUSR2, overlap=False),
        Step("router", signal.SIGUSR2, overlap=True),
    ]


def test_role_host_setting() -> None:
    assert uphost.parse_groups("off") == []
    assert uphost.parse_groups("on") == [uphost.DEFAULT_GROUPS.split("+")]
    for bad, why in (
        ("yes", "'yes' cannot share a process"),
        ("controller+router", "'router' cannot share"),
        ("controller+runner,runner+builder", "runner is named twice"),
        ("controller+runner,builder", "one role"),
    ):
        with pytest.raises(ValueError, match=why):
            uphost.parse_groups(bad)


def test_the_older_daemons_a_take_over_retires_before_the_host() -> None:
    members = ["controller", "builder", "runner", "servicehost"]
    assert uphost.older_retirements(members, hands_over=True) == [
        ("controller", signal.SIGTERM),
        ("builder", signal.SIGTERM),
        ("runner", signal.SIGUSR2),
        ("servicehost", signal.SIGUSR2),
    ]
    # A restart: the older runner serves until the apps have moved.
    assert uphost.older_retirements(members, hands_over=False) == [
        ("controller", signal.SIGTERM),
        ("builder", signal.SIGTERM),
        ("servicehost", signal.SIGTERM),
    ]


def test_a_take_over_hands_a_process_of_several_roles_over_as_a_whole(tmp_path: Path) -> None:
    """A later release taking over from this one's `roost up` (roost.cli.takeover):
    the older roles that share a process are retired together, with SIGUSR2
    (a SIGTERM for its controller would stop the runner's instances)."""
    import subprocess
    import sys

    from roost.cli.takeover import Older

    got = tmp_path / "got"
    child = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import signal, sys, time\n"
            "def on(sig, _f):\n"
            f"    open({str(got)!r}, 'w').write(signal.Signals(sig).name); sys.exit(0)\n"
            "signal.signal(signal.SIGUSR2, on); signal.signal(signal.SIGTERM, on)\n"
            f"open({str(got)!r} + '.ready', 'w').close()\n"
            # Short sleeps: a signal that comes just before a long sleep's
            # system call is handled only once it ends (tests/proc/test_supervise).
            "for _ in range(6000):\n"
            "    time.sleep(0.01)\n",
        ]
    )
    try:
        ready = Path(f"{got}.ready")
        for _ in range(200):
            if ready.exists():
                break
            threading.Event().wait(0.05)
        said: list[str] = []
        older = Older(os.getpid(), tmp_path, said.append)
        older.roles = {"controller": child.pid, "runner": child.pid, "router": 1 << 22}
        asyncio.run(older.retire("controller"))
        assert got.read_text() == "SIGUSR2"
        assert older.roles == {"router": 1 << 22}
        assert said == [f"handing over from the older controller+runner (pid {child.pid})"]
    finally:
        child.kill()
        child.wait()
