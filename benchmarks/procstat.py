"""CPU time and memory of processes, read from /proc (Linux only)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")
_PROC = Path("/proc")


def parent_of(pid: int) -> int | None:
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command name in brackets may contain spaces; fields follow the last ")".
    return int(stat.rpartition(")")[2].split()[1])


def descendants(pid: int) -> list[int]:
    """Find every process below `pid` by walking the parent links in /proc."""
    parents: dict[int, int] = {}
    for entry in _PROC.iterdir():
        if entry.name.isdigit():
            parent = parent_of(int(entry.name))
            if parent is not None:
                parents[int(entry.name)] = parent
    found: list[int] = []
    frontier = [pid]
    while frontier:
        current = frontier.pop()
        children = [child for child, parent in parents.items() if parent == current]
        found.extend(children)
        frontier.extend(children)
    return found


def command_line(pid: int) -> list[str]:
    try:
        raw = (_PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def cpu_seconds(pid: int) -> float:
    """User and system time of `pid` and of its children it has waited for."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return 0.0
    fields = stat.rpartition(")")[2].split()
    # Fields 14-17 of proc(5): utime, stime, cutime, cstime.
    return sum(int(value) for value in fields[11:15]) / _TICKS


def _status_bytes(pid: int, key: str) -> int:
    try:
        text = (_PROC / str(pid) / "status").read_text()
    except OSError:
        return 0
    for line in text.splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def rss(pid: int) -> int:
    return _status_bytes(pid, "VmRSS")


def peak_rss(pid: int) -> int:
    """Return the resident set high-water mark (VmHWM) since start or the last reset."""
    return _status_bytes(pid, "VmHWM")


def reset_peak(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux 4.0+); False where that is refused."""
    try:
        (_PROC / str(pid) / "clear_refs").write_text("5")
    except OSError:
        return False
    return True


@dataclass
class Window:
    """CPU and memory of named processes over one measured interval."""

    pids: dict[str, int]
    cpu_start: dict[str, float] = field(default_factory=dict)
    cpu_end: dict[str, float] = field(default_factory=dict)
    idle_rss: dict[str, int] = field(default_factory=dict)
    peak: dict[str, int] = field(default_factory=dict)
    peak_reset: bool = True

    def start(self) -> None:
        for name, pid in self.pids.items():
            self.peak_reset = reset_peak(pid) and self.peak_reset
            self.cpu_start[name] = cpu_seconds(pid)
            self.idle_rss[name] = rss(pid)
            self.peak[name] = self.idle_rss[name]

    def sample(self) -> None:
        """Fold the current RSS into the peaks (a fallback where VmHWM is not reset)."""
        for name, pid in self.pids.items():
            self.peak[name] = max(self.peak[name], rss(pid))

    def stop(self) -> None:
        for name, pid in self.pids.items():
            self.cpu_end[name] = cpu_seconds(pid)
            if self.peak_reset:
                self.peak[name] = max(self.peak[name], peak_rss(pid))
            else:
                self.sample()

    def cpu(self, name: str) -> float:
        return self.cpu_end.get(name, 0.0) - self.cpu_start.get(name, 0.0)

    def peak_above_idle(self, name: str) -> int:
        return self.peak.get(name, 0) - self.idle_rss.get(name, 0)

    async def sample_until(self, stop: asyncio.Event, interval: float = 0.1) -> None:
        while not stop.is_set():
            self.sample()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
