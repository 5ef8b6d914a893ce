"""The load generator: N concurrent aiosmtplib connections, bounded in count and time.

Each worker keeps one SMTP connection open and sends messages one after the
other on it, as an MTA does. The time of each `250` reply to DATA is recorded
per benchmark id; the sink records when the same id arrives.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import aiosmtplib

# A message to send: (bench id, envelope sender, envelope recipients, bytes).
Outgoing = tuple[str, str, list[str], bytes]
MessageSource = Callable[[int], Outgoing]

# A worker that loses its connection reconnects at most this often.
_MAX_RECONNECTS = 5


@dataclass
class LoadRun:
    """Record of one load phase: id -> monotonic time of the `250` reply."""

    accepted: dict[str, float] = field(default_factory=dict)
    started: float = 0.0
    finished: float = 0.0
    failures: int = 0
    last_error: str = ""
    # Connections the target closed with 421 (for example after N messages).
    reconnections: int = 0
    attempted: int = 0


async def drive(
    port: int,
    source: MessageSource,
    *,
    connections: int,
    max_messages: int,
    max_seconds: float,
    rate: float | None = None,
    run: LoadRun | None = None,
) -> LoadRun:
    """Send up to `max_messages` within `max_seconds`, closed loop or at `rate`/s.

    Closed loop (rate None): each connection sends its next message as soon as
    the previous one is answered. At a rate: message i is due at start + i/rate
    and waits for a free connection, so a rate the target cannot keep up with
    turns into a closed loop.
    """
    run = run or LoadRun()
    run.started = time.monotonic()
    deadline = run.started + max_seconds
    counter = iter(range(max_messages))

    async def worker() -> None:
        reconnects = 0
        client = await _connect(port)
        try:
            for index in counter:
                now = time.monotonic()
                if now >= deadline:
                    return
                if rate is not None:
                    due = run.started + index / rate
                    if due > now:
                        await asyncio.sleep(due - now)
                bench_id, sender, recipients, message = source(index)
                run.attempted += 1
                # Two tries: a 421 ends only this connection, so the message
                # goes again on a new one, as an MTA would send it.
                for _ in range(2):
                    try:
                        await client.sendmail(sender, recipients, message)
                    except (aiosmtplib.SMTPException, OSError, TimeoutError) as err:
                        closing = getattr(err, "code", None) == 421
                        if closing:
                            run.reconnections += 1
                        else:
                            run.failures += 1
                            run.last_error = f"{type(err).__name__}: {err}"[:300]
                            reconnects += 1
                        if reconnects > _MAX_RECONNECTS:
                            return
                        await _close(client)
                        client = await _connect(port)
                        if closing:
                            continue
                        break
                    run.accepted[bench_id] = time.monotonic()
                    break
        finally:
            await _close(client)

    await asyncio.gather(*(worker() for _ in range(connections)))
    run.finished = time.monotonic()
    return run


async def _connect(port: int) -> aiosmtplib.SMTP:
    client = aiosmtplib.SMTP(
        hostname="127.0.0.1",
        port=port,
        timeout=120,
        start_tls=False,
        local_hostname="loadgen.localhost",
    )
    await client.connect()
    return client


async def _close(client: aiosmtplib.SMTP) -> None:
    try:
        await client.quit()
    except (aiosmtplib.SMTPException, OSError, TimeoutError):
        client.close()


@dataclass(frozen=True)
class Arrival:
    time: float
    bench_id: str
    recipients: int
    size: int
    enveloped: bool


class SinkLog:
    """Reads the sink's arrival lines written since this phase began."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = path.stat().st_size if path.exists() else 0
        self.arrivals: list[Arrival] = []

    def poll(self) -> list[Arrival]:
        if not self.path.exists():
            return self.arrivals
        with self.path.open("rb") as log:
            log.seek(self.offset)
            data = log.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        for line in data[:end].decode().splitlines():
            arrived, bench_id, recipients, size, enveloped = line.split()
            self.arrivals.append(
                Arrival(
                    float(arrived),
                    bench_id,
                    int(recipients),
                    int(size),
                    enveloped == "1",
                )
            )
        return self.arrivals

    def by_id(self) -> dict[str, Arrival]:
        """Return the last arrival of each id (one per id unless a message is split)."""
        return {arrival.bench_id: arrival for arrival in self.poll()}

    async def wait_for(
        self,
        done: Callable[[list[Arrival]], bool],
        timeout: float,
        on_poll: Callable[[list[Arrival]], None] | None = None,
    ) -> bool:
        """Poll until `done(arrivals)`, at most `timeout` seconds; True if done."""
        deadline = time.monotonic() + timeout
        while True:
            arrivals = self.poll()
            if on_poll is not None:
                on_poll(arrivals)
            if done(arrivals):
                return True
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.1)


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of `values` (0 < fraction <= 1)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-fraction * len(ordered) // 1))))
    return ordered[rank - 1]
