"""Memory of a process and all its descendants (server children, DataLoader workers), from /proc."""

from __future__ import annotations

import os


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, stack = [], [pid]
    while stack:
        current = stack.pop()
        found.append(current)
        stack += children.get(current, [])
    return found


def tree_memory_mb(pid: int, field: str = "Rss") -> float:
    """Sum of a /proc/PID/smaps_rollup field over the process tree: "Rss" (resident memory) or
    "Pss" (proportional set size: pages that processes share are counted once in all)."""
    total = 0
    for current in descendants(pid):
        try:
            for line in open(f"/proc/{current}/smaps_rollup"):
                if line.startswith(f"{field}:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024
