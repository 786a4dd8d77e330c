"""A fork bomb: forks until the kernel says no, then holds what it got."""

import os
import time

children = 0
try:
    while True:
        pid = os.fork()
        if pid == 0:
            time.sleep(600)
            os._exit(0)
        children += 1
except OSError as exc:
    print(f"BOMB stopped after {children} forks: {exc}", flush=True)
time.sleep(600)
