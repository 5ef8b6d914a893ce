"""Three NATS nodes, two replicas of every service, and SIGKILL in the middle.

Invariant 1 of the design: a message answered with 250 is delivered, whatever
process or broker node dies in between. The test counts what arrives twice.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest
from nats.js.api import StorageType

from smimegw import streams
from smimegw.service import SERVICE_NAMES
from tests.cluster import (
    MAIL_CONSUMERS,
    Fleet,
    LoadResult,
    NatsCluster,
    consumers_settled,
    index_of,
    send_load,
    write_config,
)
from tests.conftest import gateway_settings
from tests.harness import SinkServer, wait_until

TOTAL = 2000


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[NatsCluster]:
    nats_cluster = NatsCluster(tmp_path / "nats")
    nats_cluster.start()
    try:
        yield nats_cluster
    finally:
        nats_cluster.stop()


async def test_kills_in_a_cluster_lose_nothing(
    tmp_path: Path, cluster: NatsCluster, sink: SinkServer
) -> None:
    settings = gateway_settings(
        tmp_path,
        nats={"replicas": 3},
        bus={"ack_wait": "5s"},
        delivery={"relay_host": f"127.0.0.1:{sink.port}", "connect_timeout": "3s"},
    )
    await cluster.wait_for_jetstream(settings)
    fleet = Fleet(write_config(tmp_path / "gw.toml", settings), cluster.urls, tmp_path)
    for name in SERVICE_NAMES:
        fleet.add(name, 2)
    await fleet.start()
    try:
        started = time.monotonic()
        result = LoadResult()
        sending = asyncio.create_task(
            send_load(fleet.smtp_ports, range(TOTAL), result=result, deadline=150)
        )

        async def some_delivered() -> bool:
            return len(sink.messages) >= TOTAL // 4

        await wait_until(some_delivered, timeout=90)
        # The node most clients talk to first, and one replica of each service.
        cluster.kill(cluster.nodes[0])
        for name in SERVICE_NAMES:
            fleet.signal(fleet.of(name)[0], signal.SIGKILL)
        killed_at = time.monotonic()
        arrived_before_kill = len(sink.messages)
        await sending
        assert sorted(result.accepted) == list(range(TOTAL))

        async def all_arrived() -> bool:
            return len({index_of(m.content) for m in sink.messages}) == TOTAL

        await wait_until(all_arrived, timeout=90, step=0.5)
        recovered = time.monotonic() - killed_at
        survivors = ",".join(n.url for n in cluster.nodes if n.alive)
        await wait_until(
            lambda: consumers_settled(survivors, MAIL_CONSUMERS), timeout=30
        )

        counts = Counter(index_of(m.content) for m in sink.messages)
        twice = sum(1 for n in counts.values() if n > 1)
        resent = sum(1 for ids in result.accepted.values() if len(ids) > 1)
        nc = await nats.connect(survivors.split(","))
        try:
            js = nc.jetstream()
            stored = {
                name: (await js.stream_info(name)).config
                for name in (
                    *(c.name for c in streams.stream_configs(settings)),
                    f"KV_{streams.DELIVERY_BUCKET}",
                    f"KV_{streams.KEYS_BUCKET}",
                )
            }
            parked = await js.stream_info(streams.PARKED)
        finally:
            await nc.close()
        print(
            f"\n{TOTAL} messages in {time.monotonic() - started:.1f} s; "
            f"{arrived_before_kill} arrived before the kills; all delivered "
            f"{recovered:.1f} s after them; {twice} arrived more than once "
            f"({len(sink.messages) - TOTAL} extra copies; {resent} sent twice "
            f"by the client after a lost reply; {result.resends} client retries)"
        )
        for name, config in stored.items():
            assert config.num_replicas == 3, name
            assert config.storage == StorageType.FILE, name
        assert stored["MAIL"].max_age == settings.bus.mail_max_age.total_seconds()
        delivery_state = stored[f"KV_{streams.DELIVERY_BUCKET}"]
        assert delivery_state.max_age == settings.bus.mail_max_age.total_seconds()
        assert not stored["CONFIG"].max_age
        assert not stored["BODIES"].max_age
        assert parked.state.messages == 0
        # Copies come from the window that cannot be closed: a delivery
        # replica killed between the next hop's 250 and its record, or a record
        # delayed past half of ack_wait by the lost NATS node. Each delivery
        # replica handles at most 16 messages at once.
        assert len(sink.messages) - TOTAL <= 64
    finally:
        fleet.stop()
