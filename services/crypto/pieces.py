"""Byte strings kept as ranges of existing buffers, for large message bodies.

Each outgoing S/MIME step (canonical form, multipart/signed, encryption, base64)
used to join its output into one bytes object, so a 30 MB message existed several
times at once. A Pieces value instead refers to ranges of the bytes objects that
already exist: the received message, the header lines built around it, and the
parts that canonical form had to re-encode.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

# The maximum size of the memoryviews that `Pieces.views` yields. A step that reads
# them (a hash, a cipher) then allocates no more than this per call.
WINDOW = 256 * 1024


@dataclass(frozen=True, slots=True)
class Span:
    """The bytes `data[start:end]`, not copied."""

    data: bytes
    start: int
    end: int

    def __len__(self) -> int:
        return self.end - self.start


class Pieces:
    """A byte string made of spans of bytes objects, read without joining them."""

    __slots__ = ("_size", "_spans")

    def __init__(self, parts: Iterable[bytes | Span | Pieces] = ()) -> None:
        self._spans: list[Span] = []
        self._size = 0
        for part in parts:
            self.append(part)

    def append(self, part: bytes | Span | Pieces) -> None:
        """Add `part` at the end; empty parts are dropped."""
        if isinstance(part, Pieces):
            for span in part._spans:
                self.append(span)
            return
        span = part if isinstance(part, Span) else Span(part, 0, len(part))
        if span.end > span.start:
            self._spans.append(span)
            self._size += span.end - span.start

    def __len__(self) -> int:
        return self._size

    def views(self, window: int = WINDOW) -> Iterator[memoryview]:
        """Yield the bytes in order as memoryviews of at most `window` bytes."""
        for span in self._spans:
            view = memoryview(span.data)
            for offset in range(span.start, span.end, window):
                yield view[offset : min(offset + window, span.end)]

    def join(self) -> bytes:
        """Return the whole byte string as one bytes object.

        This is a copy, unless the pieces are one whole bytes object.
        """
        if len(self._spans) == 1 and len(self._spans[0].data) == self._size:
            return self._spans[0].data
        return b"".join(self.views(self._size or 1))

    def count(self, sub: bytes) -> int:
        """Count `sub` as `bytes.count` of the joined string would.

        The count is exact for a `sub` that cannot overlap itself, such as "\\r\\n"
        or a MIME boundary. An occurrence across two spans counts once, in the span
        where it ends.
        """
        total = 0
        for window, span in self._windows(len(sub)):
            total += window.count(sub) + span.data.count(sub, span.start, span.end)
        return total

    def contains(self, sub: bytes) -> bool:
        """Return whether `sub` occurs in the joined string."""
        return any(
            sub in window or span.data.find(sub, span.start, span.end) >= 0
            for window, span in self._windows(len(sub))
        )

    def _windows(self, length: int) -> Iterator[tuple[bytes, Span]]:
        """Yield each span with the bytes around its start that `length` can cross.

        The window contains the last `length - 1` bytes before the span and the first
        `length - 1` of the span, so any occurrence in it starts before the span
        and ends inside it.
        """
        reach = max(length - 1, 0)
        carry = b""
        for span in self._spans:
            head = span.data[span.start : min(span.end, span.start + reach)]
            yield (carry + head if carry else b""), span
            if reach:
                tail = span.data[max(span.start, span.end - reach) : span.end]
                carry = (carry + tail)[-reach:]


def gather(size: int, chunks: Iterable[bytes | memoryview]) -> bytearray:
    """Copy `chunks` in order into one new bytearray of exactly `size` bytes.

    The buffer is allocated once at its final size, so it is never grown and
    copied while the chunks arrive. Raises ValueError when the chunks do not add up
    to `size`, which means the size computed in advance was wrong.
    """
    out = bytearray(size)
    with memoryview(out) as view:
        position = 0
        for chunk in chunks:
            end = position + len(chunk)
            if end > size:
                raise ValueError(f"chunks exceed the stated size of {size} bytes")
            view[position:end] = chunk
            position = end
    if position != size:
        raise ValueError(f"chunks contain {position} bytes, not the stated {size}")
    return out
