"""Queue ids: short, sortable by time, safe as a NATS subject token and a file name."""

from __future__ import annotations

import secrets
import time

_ALPHABET = "0123456789BCDFGHJKLMNPQRSTVWXZ"


def _encode(number: int, length: int) -> str:
    chars = []
    for _ in range(length):
        number, digit = divmod(number, len(_ALPHABET))
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))


def new_queue_id() -> str:
    """Return 18 characters: 9 of milliseconds since the epoch, 9 random.

    30 symbols without vowels, so an id never spells a word; 30**9 random values
    make a collision within one millisecond negligible.
    """
    millis = time.time_ns() // 1_000_000
    return _encode(millis, 9) + _encode(secrets.randbits(45) % 30**9, 9)
