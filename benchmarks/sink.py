"""The sink SMTP server: accepts everything and logs when each message arrived.

Run as `python -m benchmarks.sink PORT LOGFILE`. Each accepted message adds a
line `MONOTONIC_TIME BENCH_ID RECIPIENTS SIZE ENCRYPTED` to LOGFILE. The time is
CLOCK_MONOTONIC, which Linux shares between processes, so the load generator's
times compare with it directly.
"""

from __future__ import annotations

import asyncio
import re
import signal
import sys
import time
from pathlib import Path
from typing import IO

from aiosmtpd.smtp import SMTP, Envelope, Session

_BENCH_HEADER = re.compile(rb"^X-Bench-Id:[ \t]*(\S+)", re.MULTILINE | re.IGNORECASE)
_BENCH_RECIPIENT = re.compile(r"^bench-([A-Za-z0-9_-]+)@")
_ENVELOPED = re.compile(
    rb"^Content-Type:[ \t]*application/(x-)?pkcs7-mime", re.MULTILINE | re.IGNORECASE
)
# Only the top of a message is searched: the headers, not a 30 MB body.
_HEAD_BYTES = 64 * 1024
MAX_MESSAGE = 64 * 1024 * 1024


def bench_id(recipients: list[str], content: bytes) -> str:
    """Find the benchmark id in a `bench-ID@` recipient, else in X-Bench-Id, else -."""
    for recipient in recipients:
        match = _BENCH_RECIPIENT.match(recipient)
        if match:
            return match.group(1)
    head = content[:_HEAD_BYTES]
    end = head.find(b"\r\n\r\n")
    found = _BENCH_HEADER.search(head if end < 0 else head[:end])
    return found.group(1).decode("ascii", "replace") if found else "-"


def is_enveloped(content: bytes) -> bool:
    head = content[:_HEAD_BYTES]
    end = head.find(b"\r\n\r\n")
    return _ENVELOPED.search(head if end < 0 else head[:end]) is not None


class SinkHandler:
    def __init__(self, log: IO[str]) -> None:
        self.log = log

    async def handle_DATA(
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        arrived = time.monotonic()
        content = envelope.original_content or b""
        recipients = list(envelope.rcpt_tos)
        self.log.write(
            f"{arrived:.6f} {bench_id(recipients, content)} {len(recipients)} "
            f"{len(content)} {int(is_enveloped(content))}\n"
        )
        return "250 2.0.0 Ok: stored"


async def serve(port: int, log_path: Path) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    with log_path.open("a", buffering=1) as log:
        handler = SinkHandler(log)

        def factory() -> SMTP:
            session = SMTP(
                handler,
                decode_data=False,
                enable_SMTPUTF8=True,
                data_size_limit=MAX_MESSAGE,
                hostname="sink.localhost",
            )
            session.line_length_limit = MAX_MESSAGE
            return session

        server = await loop.create_server(factory, "127.0.0.1", port)
        await stop.wait()
        server.close()


def main() -> None:
    asyncio.run(serve(int(sys.argv[1]), Path(sys.argv[2])))


if __name__ == "__main__":
    main()
