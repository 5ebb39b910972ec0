#!/usr/bin/env python3
"""Measures the disk's synced-write latency where the benchmark's nodes keep
their data: the floor under a lone replicated write, which needs its entry
synced on a quorum (the leader's sync and a follower's run at the same time
on this one disk, as the three members' do).

Usage: fsync_floor.py DIR [SECONDS]

Prints one JSON line per concurrency (1 writer, and 3: one per member),
each writer appending 4 KiB and calling fdatasync in a loop on its own file:
p50/p99 of one synced append in ms, and the synced appends per second one
writer achieves (an upper bound on one client's replicated writes/s).
"""

import json
import os
import sys
import threading
import time


def writer(path, seconds, out):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    block = b"x" * 4096
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            t0 = time.perf_counter()
            os.write(fd, block)
            os.fdatasync(fd)
            out.append(time.perf_counter() - t0)
    finally:
        os.close(fd)
        os.unlink(path)


def measure(directory, writers, seconds):
    samples = [[] for _ in range(writers)]
    threads = [
        threading.Thread(target=writer, args=(os.path.join(directory, f"fsync-floor-{i}"), seconds, samples[i]))
        for i in range(writers)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    one = sorted(samples[0])
    if not one:
        return None
    pick = lambda q: round(one[min(len(one) - 1, int(q * len(one)))] * 1000, 3)
    return {
        "target": "disk", "tool": "fdatasync", "workload": "floor", "clients": writers,
        "p50_ms": pick(0.50), "p99_ms": pick(0.99),
        "writes_per_sec": round(len(one) / seconds),
    }


def main():
    directory = sys.argv[1]
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 3.0
    for writers in (1, 3):
        row = measure(directory, writers, seconds)
        if row:
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
