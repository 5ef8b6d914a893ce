"""The outbox folder: the embedded default's next hop when no relay host is set."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path


def envelope_headers(sender: str, recipients: Sequence[str]) -> bytes:
    """Header fields recording the SMTP envelope at the top of an outbox file."""
    lines = [f"X-Envelope-From: <{sender}>"]
    lines += [f"X-Envelope-To: <{recipient}>" for recipient in recipients]
    return ("\r\n".join(lines) + "\r\n").encode("utf-8", "surrogateescape")


def write_message(
    outbox: Path, name: str, sender: str, recipients: Sequence[str], message: bytes
) -> Path:
    """Write `<name>.eml` atomically and durably; the same name again replaces it.

    Blocking: call it in a worker thread.
    """
    outbox.mkdir(parents=True, exist_ok=True)
    final = outbox / f"{name}.eml"
    temporary = outbox / f".{name}.eml.tmp"
    # Mode 0600: decrypted mail lands here in clear.
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as file:
        file.write(envelope_headers(sender, recipients))
        file.write(message)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, final)
    return final
