"""A large protected message stored while it is produced, read back whole."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import nats
import pytest

from services.crypto.handlers import StreamedBody, read_in_thread
from services.crypto.outgoing import STREAM_ABOVE, Signer, protect_body
from smimegw import streams
from smimegw.bodies import BodyStore, BodyStoreError
from smimegw.settings import Settings
from tests.crypto.test_mime_support import Pki, make_pki, openssl_cms
from tests.harness import NatsServer
from tests.outgoing.test_memory import PROFILE, text_message


@pytest.fixture
async def store(nats_server: NatsServer, tmp_path: Path) -> AsyncIterator[BodyStore]:
    client = await nats.connect(nats_server.url)
    await streams.provision(client.jetstream(), Settings(data_dir=tmp_path))
    yield BodyStore(client, client.jetstream())
    await client.close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


async def pieces_of(data: bytes, sizes: list[int]) -> AsyncIterator[bytes]:
    position = 0
    for size in sizes:
        yield data[position : position + size]
        position += size
    yield data[position:]


@pytest.mark.parametrize(
    "sizes",
    [[], [0, 0], [1, 1_048_575, 3], [2_000_000, 1], [500_000] * 7],
    ids=["whole", "empty-pieces", "odd", "large-first", "even"],
)
async def test_put_chunks_matches_put(store: BodyStore, sizes: list[int]) -> None:
    data = bytes(i % 253 for i in range(3_500_001))

    streamed = await store.put_chunks("streamed", pieces_of(data, sizes))
    whole = await store.put("whole", data)

    assert streamed.size == whole.size
    assert streamed.sha256 == whole.sha256
    assert streamed.chunks == whole.chunks
    assert await store.get(streamed) == data


async def test_put_chunks_of_nothing(store: BodyStore) -> None:
    ref = await store.put_chunks("empty", pieces_of(b"", []))

    assert ref.size == 0
    assert ref.chunks == 1
    assert ref.sha256 == hashlib.sha256(b"").hexdigest()
    assert await store.get(ref) == b""


async def test_large_result_is_streamed(
    store: BodyStore, pki: Pki, tmp_path: Path
) -> None:
    message = text_message(3 * STREAM_ABOVE)
    signer = Signer(pki.signer_cert, pki.signer_key, (), cast(Any, None))

    body = protect_body(message, PROFILE, signer, [pki.recipient_cert], "aes256-cbc")
    assert isinstance(body, StreamedBody)
    ref = await store.put_chunks("protected", read_in_thread(body.chunks))

    assert ref.size == body.size
    (tmp_path / "message.eml").write_bytes(await store.get(ref))
    decrypted = openssl_cms(
        "-decrypt", "-in", tmp_path / "message.eml",
        "-inkey", pki.recipient_key_pem, "-out", tmp_path / "signed.eml",
    )  # fmt: skip
    assert decrypted.returncode == 0, decrypted.stderr.decode()
    verified = openssl_cms(
        "-verify", "-CAfile", pki.ca_pem, "-in", tmp_path / "signed.eml",
        "-out", tmp_path / "content.bin",
    )  # fmt: skip
    assert verified.returncode == 0, verified.stderr.decode()


def test_small_result_is_whole(pki: Pki) -> None:
    signer = Signer(pki.signer_cert, pki.signer_key, (), cast(Any, None))

    body = protect_body(
        text_message(10_000), PROFILE, signer, [pki.recipient_cert], "aes256-cbc"
    )

    assert isinstance(body, bytearray)


@pytest.mark.parametrize("size_change", [-1_500_000, -1, 1, 2_000_000])
async def test_get_rejects_wrong_size(store: BodyStore, size_change: int) -> None:
    """A chunked body read into its buffer is checked against the reference."""
    ref = await store.put("sized", bytes(3_000_000))
    wrong = ref.model_copy(update={"size": ref.size + size_change})

    with pytest.raises(BodyStoreError, match="does not match its reference"):
        await store.get(wrong)


async def test_get_reads_chunks_of_mixed_sizes(store: BodyStore) -> None:
    """A header section stored as a short first chunk shifts every later chunk."""
    data = bytes(i % 251 for i in range(3_500_000))

    ref = await store.put("mixed", data, head_size=100)

    assert ref.chunks >= 4
    assert await store.head(ref) == data[:100]
    assert await store.get(ref) == data
