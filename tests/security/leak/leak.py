"""Runs quietly for a while (so its release goes live), then grows until stopped."""

import time

time.sleep(12)
hoard = []
while True:
    hoard.append(bytearray(16 << 20))
    time.sleep(0.01)
