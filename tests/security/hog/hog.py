"""A memory hog: grows until something stops it."""

import time

hoard = []
while True:
    hoard.append(bytearray(16 << 20))
    print(f"HOG holds {len(hoard) * 16} MB", flush=True)
    time.sleep(0.01)
