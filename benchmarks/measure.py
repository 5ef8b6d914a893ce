"""Measurement phases shared by the gateway scenarios and the SMTP baselines."""

from __future__ import annotations

import asyncio
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import procstat, profiling
from benchmarks.load import Arrival, LoadRun, MessageSource, SinkLog, drive, percentile

HARNESS = "harness"
SINK = "sink"


@dataclass(frozen=True)
class Bounds:
    """Limits of one run; every load phase stops at the first one reached."""

    connections: int = 16
    max_messages: int = 2500
    saturation_seconds: float = 20.0
    half_rate_seconds: float = 12.0
    drain_seconds: float = 60.0
    warmup_messages: int = 20
    # Wait at most this long for the target to go idle after saturation (a
    # service such as audit may still work through a backlog).
    settle_seconds: float = 30.0
    # Where py-spy profiles of each saturation phase go; None: no profiling.
    profile_dir: Path | None = None


@dataclass
class Result:
    """The figures of one scenario or baseline."""

    name: str
    group: str
    status: str = "ok"
    message_size: int = 0
    messages: int = 0
    throughput: float | None = None
    half_rate: float | None = None
    latency_ms: dict[str, float] = field(default_factory=dict)
    saturated_latency_ms: dict[str, float] = field(default_factory=dict)
    cpu_ms: dict[str, float] = field(default_factory=dict)
    peak_mb: dict[str, float] = field(default_factory=dict)
    above_idle_mb: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # The 1-minute load average when the measured phase started: other work
    # on the machine shows here.
    load: float | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def say(text: str) -> None:
    """Progress on stderr, so stdout stays free for the summary."""
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def latencies(run: LoadRun, arrivals: dict[str, Arrival]) -> dict[str, float]:
    """p50, p95 and p99 in ms from the client's `250` to the arrival at the sink."""
    values = [
        (arrivals[bench_id].time - accepted) * 1000
        for bench_id, accepted in run.accepted.items()
        if bench_id in arrivals
    ]
    if not values:
        return {}
    return {
        "p50": percentile(values, 0.50),
        "p95": percentile(values, 0.95),
        "p99": percentile(values, 0.99),
    }


async def _report_progress(
    label: str, run: LoadRun, sink: SinkLog, stop: asyncio.Event
) -> None:
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), 2.0)
        except TimeoutError:
            elapsed = time.monotonic() - run.started if run.started else 0.0
            arrived = len(sink.poll())
            rate = arrived / elapsed if elapsed > 0 else 0.0
            say(
                f"  {label}: {elapsed:5.1f} s, {len(run.accepted)} accepted, "
                f"{arrived} arrived ({rate:.0f}/s), {run.failures} failed"
            )


async def load_phase(
    label: str,
    port: int,
    source: MessageSource,
    sink_log: Path,
    bounds: Bounds,
    *,
    connections: int,
    max_messages: int,
    max_seconds: float,
    rate: float | None = None,
    window: procstat.Window | None = None,
) -> tuple[LoadRun, dict[str, Arrival], bool]:
    """Send one phase of load, then wait (bounded) until every accepted id arrived."""
    sink = SinkLog(sink_log)
    run = LoadRun()
    stop = asyncio.Event()
    tasks = [asyncio.create_task(_report_progress(label, run, sink, stop))]
    if window is not None:
        window.start()
        tasks.append(asyncio.create_task(window.sample_until(stop)))
    try:
        await drive(
            port,
            source,
            connections=connections,
            max_messages=max_messages,
            max_seconds=max_seconds,
            rate=rate,
            run=run,
        )

        def all_arrived(arrivals: list[Arrival]) -> bool:
            seen = {arrival.bench_id for arrival in arrivals}
            return all(bench_id in seen for bench_id in run.accepted)

        drained = await sink.wait_for(all_arrived, bounds.drain_seconds)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        if window is not None:
            window.stop()
    return run, sink.by_id(), drained


async def measure_smtp(
    result: Result,
    port: int,
    make_source: Callable[[str], MessageSource],
    pids: dict[str, int],
    sink_log: Path,
    bounds: Bounds,
) -> None:
    """Warm up, saturate (throughput, CPU, memory), then hold half that rate (latency).

    `make_source(phase)` returns the messages of one phase; their ids must be
    unique across phases.
    """
    say(f"{result.name}: warm-up")
    run, arrivals, drained = await load_phase(
        "warm-up",
        port,
        make_source("w"),
        sink_log,
        bounds,
        connections=min(4, bounds.connections),
        max_messages=bounds.warmup_messages,
        max_seconds=30.0,
    )
    if not run.accepted or not drained:
        result.status = (
            f"failed: warm-up got {len(run.accepted)} accepted, "
            f"{len(arrivals)} arrived ({run.last_error or 'no error reported'})"
        )
        return

    say(f"{result.name}: saturation with {bounds.connections} connections")
    window = procstat.Window(dict(pids, **{HARNESS: os.getpid()}))
    result.load = os.getloadavg()[0]
    recorders = []
    if bounds.profile_dir is not None:
        profiled = {k: v for k, v in pids.items() if k not in (SINK, "nats-server")}
        recorders = profiling.start(
            bounds.profile_dir, result.name, profiled, bounds.saturation_seconds
        )
    run, arrivals, drained = await load_phase(
        "saturation",
        port,
        make_source("s"),
        sink_log,
        bounds,
        connections=bounds.connections,
        max_messages=bounds.max_messages,
        max_seconds=bounds.saturation_seconds,
        window=window,
    )
    await asyncio.to_thread(profiling.finish, recorders)
    arrived = [arrivals[i] for i in run.accepted if i in arrivals]
    if not arrived:
        result.status = f"failed: nothing arrived at the sink ({run.last_error})"
        return
    elapsed = max(a.time for a in arrived) - run.started
    result.messages = len(arrived)
    result.throughput = len(arrived) / elapsed
    result.saturated_latency_ms = latencies(run, arrivals)
    _fold_window(result, window, len(arrived))
    if run.failures:
        result.notes.append(
            f"{run.failures} SMTP failures under saturation; last: {run.last_error}"
        )
    if run.reconnections:
        result.notes.append(
            f"the target closed {run.reconnections} connections with 421 under "
            "saturation; the messages were sent again on new connections"
        )
    if not drained:
        result.notes.append(
            f"{len(run.accepted) - len(arrived)} accepted messages had not arrived "
            f"{bounds.drain_seconds:.0f} s after the load stopped"
        )

    waited, busy = await settle(
        {k: v for k, v in pids.items() if k != SINK}, bounds.settle_seconds
    )
    if busy:
        result.notes.append(
            f"still using {busy:.2f} cores {waited:.0f} s after the saturation "
            "phase when the half-rate phase began"
        )

    rate = result.throughput / 2
    result.half_rate = rate
    say(f"{result.name}: half rate, {rate:.1f} messages/s")
    count = max(10, math.ceil(rate * bounds.half_rate_seconds))
    run, arrivals, drained = await load_phase(
        "half rate",
        port,
        make_source("h"),
        sink_log,
        bounds,
        connections=bounds.connections,
        max_messages=count,
        max_seconds=bounds.half_rate_seconds + 10.0,
        rate=rate,
    )
    result.latency_ms = latencies(run, arrivals)
    if not drained:
        result.notes.append("the half-rate phase did not drain in time")


async def settle(
    pids: dict[str, int], max_seconds: float, idle_cores: float = 0.2
) -> tuple[float, float]:
    """Wait until `pids` together use less than `idle_cores` over one second.

    Returns the seconds waited and the cores still in use (0.0 once idle).
    """
    started = time.monotonic()
    while True:
        before = sum(procstat.cpu_seconds(pid) for pid in pids.values())
        await asyncio.sleep(1.0)
        used = sum(procstat.cpu_seconds(pid) for pid in pids.values()) - before
        waited = time.monotonic() - started
        if used < idle_cores:
            return waited, 0.0
        if waited >= max_seconds:
            return waited, used


def _fold_window(result: Result, window: procstat.Window, messages: int) -> None:
    total = 0.0
    for name in window.pids:
        cpu_ms = window.cpu(name) * 1000 / messages
        result.cpu_ms[name] = cpu_ms
        result.peak_mb[name] = window.peak[name] / 1e6
        result.above_idle_mb[name] = window.peak_above_idle(name) / 1e6
        if name not in (HARNESS, SINK):
            total += cpu_ms
    result.cpu_ms["total"] = total
    if not window.peak_reset:
        result.notes.append(
            "peak memory sampled every 0.1 s: /proc/PID/clear_refs was not writable"
        )


async def measure_single(
    result: Result,
    port: int,
    message: tuple[str, str, list[str], bytes],
    pids: dict[str, int],
    sink_log: Path,
    bounds: Bounds,
    timeout: float = 180.0,
) -> list[Arrival]:
    """Send one message and wait until every recipient's copy arrived."""
    bench_id, _, recipients, data = message
    result.message_size = len(data)
    window = procstat.Window(dict(pids, **{HARNESS: os.getpid()}))
    single = Bounds(
        connections=1,
        max_messages=1,
        saturation_seconds=timeout,
        drain_seconds=timeout,
    )
    sink = SinkLog(sink_log)
    run = LoadRun()
    stop = asyncio.Event()
    result.load = os.getloadavg()[0]
    window.start()
    sampler = asyncio.create_task(window.sample_until(stop, interval=0.05))
    progress = asyncio.create_task(_report_progress(result.name, run, sink, stop))
    try:
        await drive(
            port,
            lambda index: message,
            connections=1,
            max_messages=1,
            max_seconds=single.saturation_seconds,
            run=run,
        )

        def complete(arrivals: list[Arrival]) -> bool:
            mine = [a for a in arrivals if a.bench_id == bench_id]
            return sum(a.recipients for a in mine) >= len(recipients)

        drained = bool(run.accepted) and await sink.wait_for(complete, timeout)
    finally:
        stop.set()
        await asyncio.gather(sampler, progress)
        window.stop()
    mine = [a for a in sink.poll() if a.bench_id == bench_id]
    if not run.accepted:
        result.status = f"failed: the message was not accepted ({run.last_error})"
        return mine
    if not drained:
        result.status = (
            f"failed: {sum(a.recipients for a in mine)} of {len(recipients)} "
            f"recipients arrived within {timeout:.0f} s"
        )
        return mine
    last = max(a.time for a in mine)
    latency = (last - run.accepted[bench_id]) * 1000
    result.messages = 1
    result.latency_ms = {"p50": latency, "p95": latency, "p99": latency}
    _fold_window(result, window, 1)
    if len(mine) > 1:
        result.notes.append(f"arrived as {len(mine)} SMTP transactions")
    return mine
