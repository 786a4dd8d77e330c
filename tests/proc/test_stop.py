"""What `roost up` relies on for "nothing outlives a full stop": as a
subreaper it adopts what its daemons leave running for a successor (an
instance's shim, a PostgreSQL server: each in a session of its own), reaps
those that end (`reap_adopted`), and `kill_descendants` ends the rest."""

from __future__ import annotations

import json
import subprocess
import sys

import psutil

# Run in a process of its own: being a subreaper is for life.
SCRIPT = r"""
import json, subprocess, sys, time
from roost.proc.stop import kill_descendants
from roost.proc.wait import become_subreaper, reap_adopted

assert become_subreaper()
# A daemon that starts two tenants in sessions of their own and exits, as a
# runner handing over does: one tenant lives on, one ends soon after.
daemon = subprocess.Popen([sys.executable, "-c", '''
import subprocess, sys
for code in ("import time; time.sleep(600)", "import time; time.sleep(0.5)"):
    p = subprocess.Popen([sys.executable, "-c", code], start_new_session=True,
                         stdout=subprocess.DEVNULL)
    print(p.pid, flush=True)
'''], stdout=subprocess.PIPE, text=True)
lives, ends = (int(line) for line in daemon.stdout)
daemon.wait()
reaped, deadline = [], time.monotonic() + 30
while ends not in reaped and time.monotonic() < deadline:
    reaped += reap_adopted(set())
    time.sleep(0.05)
killed = kill_descendants()
print(json.dumps({"lives": lives, "ends": ends, "reaped": reaped, "killed": killed}))
"""


def test_a_subreaper_reaps_ended_orphans_and_kills_those_in_other_sessions() -> None:
    r = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=60, check=True
    )
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["reaped"] == [out["ends"]]  # the tenant that ended, reaped by us
    assert len(out["killed"]) == 1 and out["killed"][0].endswith(f"[{out['lives']}]")
    assert not psutil.pid_exists(out["lives"]) or (
        psutil.Process(out["lives"]).status() == psutil.STATUS_ZOMBIE
    )
