"""A rolling restart under load: SIGTERM each replica in turn, start it again.

A stopping service finishes and acks what it holds, so nothing is lost and no
consumer is left with messages awaiting an ack.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from pathlib import Path

from smimegw.service import SERVICE_NAMES
from tests.cluster import (
    MAIL_CONSUMERS,
    Fleet,
    LoadResult,
    consumers_settled,
    index_of,
    send_load,
    write_config,
)
from tests.conftest import gateway_settings
from tests.harness import NatsServer, SinkServer, wait_until

# Sent in batches until every replica has been restarted, at most this many.
MAX_MESSAGES = 4000
BATCH = 100


async def test_rolling_restart_loses_nothing(
    tmp_path: Path, nats_server: NatsServer, sink: SinkServer
) -> None:
    settings = gateway_settings(
        tmp_path,
        bus={"ack_wait": "5s"},
        delivery={"relay_host": f"127.0.0.1:{sink.port}", "connect_timeout": "3s"},
    )
    fleet = Fleet(
        write_config(tmp_path / "gw.toml", settings), nats_server.url, tmp_path
    )
    for name in SERVICE_NAMES:
        fleet.add(name, 2)
    await fleet.start()
    try:
        started = time.monotonic()
        result = LoadResult()
        rolled = asyncio.Event()

        async def load() -> int:
            sent = 0
            while not rolled.is_set() and sent < MAX_MESSAGES:
                batch = range(sent, sent + BATCH)
                await send_load(fleet.smtp_ports, batch, result=result, deadline=60)
                sent += BATCH
            return sent

        sending = asyncio.create_task(load())
        exits: dict[str, int] = {}
        # One replica of every service at a time, so each keeps one running.
        for index in (0, 1):
            wave = [r for r in fleet.replicas if r.index == index]
            for replica in wave:
                fleet.signal(replica, signal.SIGTERM)
            for replica in wave:
                exits[replica.name] = await fleet.wait_exit(replica, timeout=60)
                fleet.spawn(replica)
            await fleet.wait_ready(wave, timeout=60)
        rolled.set()
        roll_seconds = time.monotonic() - started
        total = await sending
        assert exits == {r.name: 0 for r in fleet.replicas}
        assert total < MAX_MESSAGES, "the load ended before the restarts did"
        assert sorted(result.accepted) == list(range(total))

        async def all_arrived() -> bool:
            return len({index_of(m.content) for m in sink.messages}) == total

        await wait_until(all_arrived, timeout=60, step=0.5)
        await wait_until(
            lambda: consumers_settled(nats_server.url, MAIL_CONSUMERS), timeout=30
        )
        counts = Counter(index_of(m.content) for m in sink.messages)
        twice = sum(1 for n in counts.values() if n > 1)
        print(
            f"\nrolled 10 replicas in {roll_seconds:.1f} s under load; {total} "
            "messages; "
            f"{twice} arrived more than once; {result.resends} client retries"
        )
        # Graceful stops hand over at message boundaries: no copies.
        assert twice == 0
    finally:
        fleet.stop()
