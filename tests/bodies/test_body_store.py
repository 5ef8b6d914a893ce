"""BodyStore against a real nats-server: chunking, the prefix, the reference."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import nats
import pytest

from smimegw import streams
from smimegw.bodies import BodyStore
from smimegw.settings import Settings
from tests.harness import NatsServer


@pytest.fixture
async def store(nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[BodyStore]:
    client = await nats.connect(nats_server.url)
    await streams.provision(client.jetstream(), Settings(data_dir=tmp_path))
    yield BodyStore(client, client.jetstream())
    await client.close()


@pytest.mark.parametrize(
    ("prefix_size", "data_size"),
    [(0, 0), (10, 0), (0, 10), (200, 3_000_000), (1_500_000, 700_000), (5, 1_044_476)],
)
async def test_prefix_and_data_read_back(
    store: BodyStore, prefix_size: int, data_size: int
) -> None:
    prefix = bytes(i % 251 for i in range(prefix_size))
    data = bytes(i % 241 for i in range(data_size))
    key = f"k{prefix_size}x{data_size}"
    ref = await store.put(key, data, prefix=prefix)
    assert ref.size == prefix_size + data_size
    assert ref.sha256 == hashlib.sha256(prefix + data).hexdigest()
    assert await store.get(ref) == prefix + data


async def test_chunks_have_the_chunk_size(store: BodyStore) -> None:
    ref = await store.put("split", b"d" * 2_500_000, prefix=b"Received: x\r\n")
    assert ref.chunks == -(-ref.size // store._chunk_size)
    assert ref.chunks >= 3


@pytest.mark.parametrize(
    ("prefix_size", "data_size", "head_size"),
    [
        (20, 100_000, 20 + 700),
        (20, 100_000, 10),  # the head ends inside the prefix
        (0, 3_000_000, 2_000_000),  # longer than a chunk: cut at the chunk size
        (20, 500, 520),  # the whole body: no chunk of its own
        (20, 500, 0),
    ],
)
async def test_head_chunk_of_its_own(
    store: BodyStore, prefix_size: int, data_size: int, head_size: int
) -> None:
    prefix = bytes(i % 251 for i in range(prefix_size))
    data = bytes(i % 241 for i in range(data_size))
    key = f"h{prefix_size}x{data_size}x{head_size}"
    ref = await store.put(key, data, prefix=prefix, head_size=head_size)
    body = prefix + data
    assert await store.get(ref) == body
    head = await store.head(ref)
    if 0 < head_size < len(body):
        assert head == body[: min(head_size, store._chunk_size)]
        rest = len(body) - len(head)
        assert ref.chunks == 1 + -(-rest // store._chunk_size)
    else:
        assert head == body[: store._chunk_size]
