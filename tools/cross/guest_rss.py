#!/usr/bin/env python3
"""Samples /proc/PID/smaps of a qemu-user process until it exits and prints the peak resident
memory split into the emulated program's share and qemu's own (tools/cross/measure.sh).

  guest_rss.py PID [INTERVAL_S]   ->  "<guest_peak_kib> <qemu_own_at_that_sample_kib> <total_kib>"

qemu's own: its binary's mappings, [heap], [stack], [vdso]/[vvar], and executable anonymous
mappings (the TCG translation cache). The rest (the guest binary's file pages, the guest's brk
heap and mmaps, its stack) is what the program would hold on a board, give or take page-size and
allocator differences. A heuristic, good to a few MiB.
"""
import sys
import time

QEMU_OWN = ("[heap]", "[stack]", "[vdso]", "[vvar]", "[vsyscall]")


def sample(pid):
    guest = own = 0
    name = perms = ""
    try:
        with open(f"/proc/{pid}/smaps") as f:
            for line in f:
                first = line.split(None, 5)
                if "-" in first[0] and len(first) >= 5 and not first[0].endswith(":"):
                    perms = first[1]
                    name = first[5].strip() if len(first) > 5 else ""
                elif first[0] == "Rss:":
                    kib = int(first[1])
                    is_own = (name in QEMU_OWN or "qemu-" in name
                              or (name == "" and "x" in perms))
                    if is_own:
                        own += kib
                    else:
                        guest += kib
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return guest, own


def main():
    pid = int(sys.argv[1])
    interval = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
    best = (0, 0)
    while True:
        s = sample(pid)
        if s is None:
            break
        if s[0] > best[0]:
            best = s
        time.sleep(interval)
    print(best[0], best[1], best[0] + best[1])


if __name__ == "__main__":
    main()
