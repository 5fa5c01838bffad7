#!/usr/bin/env python3
"""What an fdatasync costs on this disk, by how many pages it makes durable and where they lie.

A group commit's sync makes the pages the commit wrote durable, and redb puts those pages
wherever its allocator has room, so they are scattered over the file. This writes P random
4 KiB pages of a 200 MiB file (then the same number of contiguous ones, then 16 KiB pages) and
times the fdatasync after each round: the figures behind docs/storage.md, "Why it exists".

    python3 bench/scripts/fsync_pages.py [DIR]     # DIR: where the file goes (default: .)
"""
import os
import random
import statistics
import sys
import time

SIZE = 200 * 1024 * 1024
ROUNDS = 30


def timed_sync(fd):
    t = time.perf_counter()
    os.fdatasync(fd)
    return (time.perf_counter() - t) * 1000


def main():
    path = os.path.join(sys.argv[1] if len(sys.argv) > 1 else ".", "fsync-pages.bin")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        for off in range(0, SIZE, 1 << 20):  # a file with real blocks, as redb's is
            os.pwrite(fd, os.urandom(1 << 20), off)
        os.fsync(fd)
        print("| pages | page size | placement | fdatasync p50 ms | p90 ms |")
        print("| ---: | ---: | --- | ---: | ---: |")
        for page, counts, placement in [
            (4096, [1, 10, 30, 60, 120, 240], "scattered"),
            (4096, [30, 120], "contiguous"),
            (16384, [10, 30, 90], "scattered"),
        ]:
            buf, slots = os.urandom(page), SIZE // page
            for n in counts:
                times = []
                for _ in range(ROUNDS):
                    if placement == "scattered":
                        for slot in random.sample(range(slots), n):
                            os.pwrite(fd, buf, slot * page)
                    else:
                        os.pwrite(fd, buf * n, random.randrange(slots - n) * page)
                    times.append(timed_sync(fd))
                times.sort()
                p90 = times[int(len(times) * 0.9)]
                print(f"| {n} | {page // 1024} KiB | {placement} | {statistics.median(times):.2f} | {p90:.2f} |")
    finally:
        os.close(fd)
        os.unlink(path)


if __name__ == "__main__":
    main()
