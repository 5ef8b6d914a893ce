"""Sampling profiles of the processes under load, taken with py-spy.

`python -m benchmarks --profile DIR` records each gateway process during every
saturation phase into DIR/<scenario>.<process>.txt (py-spy's collapsed stacks)
and writes a summary of the hottest functions beside it (`.top.txt`).
"""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
from pathlib import Path

_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def available() -> str | None:
    """Return the path of py-spy, or None when it is not installed."""
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.is_file() else shutil.which("py-spy")


def start(
    directory: Path, scenario: str, pids: dict[str, int], seconds: float
) -> list[tuple[subprocess.Popen[bytes], Path]]:
    """Start one py-spy per process; they stop by themselves after `seconds`."""
    binary = available()
    if binary is None:
        return []
    directory.mkdir(parents=True, exist_ok=True)
    started = []
    for name, pid in pids.items():
        output = directory / f"{_SAFE.sub('-', scenario)}.{name}.txt"
        command = [
            binary,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(max(1, int(seconds))),
            "--rate",
            "100",
            "--format",
            "raw",
            "--output",
            str(output),
            "--nonblocking",
        ]
        process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        started.append((process, output))
    return started


def finish(started: list[tuple[subprocess.Popen[bytes], Path]]) -> None:
    """Wait (bounded) for the recorders, then summarise each profile."""
    for process, output in started:
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if output.exists():
            output.with_suffix(".top.txt").write_text(summary(output))


def summary(path: Path, rows: int = 40) -> str:
    """List the functions with the most samples, by own (leaf) and inclusive time."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [_frame(f) for f in stack.split(";")]
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    if not total:
        return "no samples\n"
    lines = [f"{total} samples", "", "own time:"]
    lines += [f"{n / total:7.1%}  {f}" for f, n in own.most_common(rows)]
    lines += ["", "inclusive time:"]
    lines += [f"{n / total:7.1%}  {f}" for f, n in inclusive.most_common(rows)]
    return "\n".join(lines) + "\n"


def _frame(frame: str) -> str:
    # py-spy writes "function (path/to/file.py:line)"; keep the last two path
    # parts and drop the line, so one function is one row.
    name, _, location = frame.partition(" (")
    file = "/".join(location.rstrip(")").rsplit(":", 1)[0].split("/")[-2:])
    return f"{name} ({file})" if file else name
