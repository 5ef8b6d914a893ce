"""Message bodies in the BODIES stream, chunked, read back by direct get.

A body is stored under `body.<key>.<n>` in chunks no larger than the server's
maximum payload, so a 30 MB message is never one NATS message. Events carry a
BodyRef. Measured on the development machine (nats-py 2.16): the object store
read 5 MiB in about 280 ms, while direct gets of stream messages were several
times faster, which is why bodies live in a plain stream.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import AsyncIterable
from typing import Final

from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from schemas import BodyRef
from smimegw.streams import BODIES

# Room for the headers that travel with each chunk.
_HEADER_ROOM: Final = 4096
_MAX_CHUNK: Final = 1024 * 1024
# Chunks of one body published concurrently, each awaiting its ack.
_PARALLEL_CHUNKS: Final = 8


class BodyStoreError(Exception):
    """A body could not be stored or read."""


class BodyNotFoundError(BodyStoreError):
    def __init__(self, key: str) -> None:
        super().__init__(
            f"body {key!r} is not in the {BODIES} stream: it was deleted after its "
            "message finished, or never stored"
        )
        self.key = key


class BodyStore:
    def __init__(self, nc: Client, js: JetStreamContext) -> None:
        self._js = js
        self._chunk_size = max(1024, min(_MAX_CHUNK, nc.max_payload - _HEADER_ROOM))

    async def put(
        self,
        key: str,
        data: bytes | bytearray | memoryview,
        timeout: float = 10.0,
        *,
        prefix: bytes = b"",
        head_size: int | None = None,
    ) -> BodyRef:
        """Store `prefix` + `data` under `key`; storing a key again is idempotent.

        The two parts are chunked as one body without being joined first, so a
        caller that adds a header to a large message keeps no second copy. `data`
        may be a bytearray or memoryview, which is read in place: do not change it
        until put returns. With `head_size`, the first chunk holds only that many
        bytes (the header section), so `head` reads no more than it needs.
        """
        size = len(prefix) + len(data)
        head, view = memoryview(prefix), memoryview(data)
        bounds = _chunk_bounds(size, self._chunk_size, head_size)
        semaphore = asyncio.Semaphore(_PARALLEL_CHUNKS)

        def chunk_at(start: int, end: int) -> bytes:
            if start >= len(head):
                return bytes(view[start - len(head) : end - len(head)])
            return bytes(head[start:end]) + bytes(view[: max(0, end - len(head))])

        async def publish(index: int, start: int, end: int) -> None:
            async with semaphore:
                # Copied inside the semaphore: copied before it, every chunk
                # of the body existed twice at once while the first ones sent.
                chunk = chunk_at(start, end)
                await self._js.publish(
                    f"body.{key}.{index}",
                    chunk,
                    stream=BODIES,
                    timeout=timeout,
                    headers={"Nats-Msg-Id": f"{key}.{index}"},
                )

        await asyncio.gather(*(publish(i, *b) for i, b in enumerate(bounds)))
        digest = hashlib.sha256(prefix)
        digest.update(data)
        return BodyRef(
            key=key, size=size, sha256=digest.hexdigest(), chunks=len(bounds)
        )

    async def put_chunks(
        self, key: str, chunks: AsyncIterable[bytes | memoryview], timeout: float = 10.0
    ) -> BodyRef:
        """Store the concatenation of `chunks` under `key`, as put stores a body.

        The body is published while `chunks` produces it, in the chunks that put
        would make, so a producer that writes a large body in pieces never has it all
        in memory. At most _PARALLEL_CHUNKS chunks wait for their ack at a time.
        """
        semaphore = asyncio.Semaphore(_PARALLEL_CHUNKS)
        digest = hashlib.sha256()
        tasks: list[asyncio.Task[None]] = []
        buffer = bytearray()
        size = 0

        async def publish(index: int, chunk: bytes) -> None:
            try:
                await self._js.publish(
                    f"body.{key}.{index}",
                    chunk,
                    stream=BODIES,
                    timeout=timeout,
                    headers={"Nats-Msg-Id": f"{key}.{index}"},
                )
            finally:
                semaphore.release()

        async def send(length: int) -> None:
            for task in tasks:
                if task.done():
                    task.result()  # raises the error of a chunk that failed, as put
            await semaphore.acquire()
            with memoryview(buffer) as view:
                chunk = bytes(view[:length])
            del buffer[:length]
            tasks.append(asyncio.create_task(publish(len(tasks), chunk)))

        try:
            async for piece in chunks:
                digest.update(piece)
                size += len(piece)
                buffer += piece
                while len(buffer) >= self._chunk_size:
                    await send(self._chunk_size)
            if buffer or not tasks:
                # put stores an empty body as one empty chunk, too.
                await send(len(buffer))
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
        return BodyRef(key=key, size=size, sha256=digest.hexdigest(), chunks=len(tasks))

    async def get(self, ref: BodyRef) -> bytes:
        """Read a body back whole and check it against its reference.

        Chunks are fetched _PARALLEL_CHUNKS at a time and written in order into one
        buffer, so a large body is held about once: joining a list of every chunk
        held it twice. Chunks may differ in size (put can make the header section
        a chunk of its own).
        """
        if ref.chunks == 1:
            data = await self._get_chunk(ref.key, 0)
            read = len(data)
        else:
            data, read = await self._read_chunks(ref)
        if read != ref.size or hashlib.sha256(data).hexdigest() != ref.sha256:
            raise BodyStoreError(
                f"body {ref.key!r} does not match its reference: {read} bytes "
                f"read, {ref.size} expected"
            )
        return data

    async def _read_chunks(self, ref: BodyRef) -> tuple[bytes, int]:
        """Return the chunks of `ref` written into one buffer, and their total size."""
        buffer = io.BytesIO()
        if ref.size > 0:
            # Writing the last byte first allocates the buffer once, at full size.
            buffer.seek(ref.size - 1)
            buffer.write(b"\0")
            buffer.seek(0)
        for first in range(0, ref.chunks, _PARALLEL_CHUNKS):
            indexes = range(first, min(first + _PARALLEL_CHUNKS, ref.chunks))
            chunks = await asyncio.gather(
                *(self._get_chunk(ref.key, index) for index in indexes)
            )
            for chunk in chunks:
                buffer.write(chunk)
            del chunks
        read = buffer.tell()
        # CPython's BytesIO returns its own buffer here, without a copy, when it
        # was filled exactly and nothing else refers to it.
        return buffer.getvalue(), read

    async def head(self, ref: BodyRef) -> bytes:
        """The first chunk: the header section when put was given its size, else
        up to a chunk of the message, enough for the header fields of any sane one.
        """
        return await self._get_chunk(ref.key, 0)

    async def _get_chunk(self, key: str, index: int) -> bytes:
        try:
            msg = await self._js.get_msg(
                BODIES, subject=f"body.{key}.{index}", direct=True
            )
        except NotFoundError as err:
            raise BodyNotFoundError(key) from err
        return msg.data or b""

    async def delete(self, key: str) -> None:
        await self._js.purge_stream(BODIES, subject=f"body.{key}.>")


def _chunk_bounds(
    size: int, chunk_size: int, head_size: int | None
) -> list[tuple[int, int]]:
    """Return (start, end) of each chunk: the head first, if given, then full chunks.

    An empty body is one empty chunk.
    """
    first = 0
    bounds = []
    if head_size is not None and 0 < head_size < size:
        first = min(head_size, chunk_size)
        bounds.append((0, first))
    bounds += [
        (start, min(start + chunk_size, size))
        for start in range(first, max(size, 1), chunk_size)
    ]
    return bounds
