"""Baselines without the bus: a bare relay, and the same relay with an OpenSSL filter.

Run as `python -m benchmarks.relay PORT NEXT_HOP_PORT [--openssl SIGNER_CERT
SIGNER_KEY RECIPIENT_CERT]`. Like the gateway, it answers `250` once the
message is queued (here in memory, with no durability), and workers forward
each message over a new aiosmtplib connection. With `--openssl`, each worker
first pipes the message through `openssl cms -sign | openssl cms -encrypt`, as
a Postfix content filter script would.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import signal

import aiosmtplib
from aiosmtpd.smtp import SMTP, Envelope, Session

from benchmarks.sink import MAX_MESSAGE

WORKERS = 16

Queued = tuple[str, list[str], bytes]


class QueueHandler:
    def __init__(self, queue: asyncio.Queue[Queued]) -> None:
        self.queue = queue

    async def handle_DATA(
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        sender = envelope.mail_from or ""
        await self.queue.put(
            (sender, list(envelope.rcpt_tos), envelope.original_content or b"")
        )
        return "250 2.0.0 Ok: queued"


def openssl_command(signer_cert: str, signer_key: str, recipient_cert: str) -> str:
    sign = (
        f"openssl cms -sign -md sha256 -signer {shlex.quote(signer_cert)} "
        f"-inkey {shlex.quote(signer_key)}"
    )
    encrypt = f"openssl cms -encrypt -aes256 {shlex.quote(recipient_cert)}"
    return f"{sign} | {encrypt}"


async def run_filter(command: str, message: bytes) -> bytes:
    process = await asyncio.create_subprocess_shell(
        command,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    output, _ = await process.communicate(message)
    if process.returncode != 0:
        raise RuntimeError(f"filter exited with status {process.returncode}")
    return output


async def forward(
    queue: asyncio.Queue[Queued], next_hop: int, command: str | None
) -> None:
    while True:
        sender, recipients, message = await queue.get()
        try:
            if command is not None:
                message = await run_filter(command, message)
            await aiosmtplib.send(
                message,
                sender=sender,
                recipients=recipients,
                hostname="127.0.0.1",
                port=next_hop,
                timeout=60,
                start_tls=False,
            )
        except (aiosmtplib.SMTPException, OSError, RuntimeError) as err:
            print(f"relay: forwarding failed: {type(err).__name__}: {err}", flush=True)
        finally:
            queue.task_done()


async def serve(args: argparse.Namespace) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    command = openssl_command(*args.openssl) if args.openssl else None
    queue: asyncio.Queue[Queued] = asyncio.Queue()
    workers = [
        asyncio.create_task(forward(queue, args.next_hop, command))
        for _ in range(args.workers)
    ]
    handler = QueueHandler(queue)

    def factory() -> SMTP:
        session = SMTP(
            handler,
            decode_data=False,
            enable_SMTPUTF8=True,
            data_size_limit=MAX_MESSAGE,
            hostname="relay.localhost",
        )
        session.line_length_limit = MAX_MESSAGE
        return session

    server = await loop.create_server(factory, "127.0.0.1", args.port)
    await stop.wait()
    server.close()
    for worker in workers:
        worker.cancel()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.relay")
    parser.add_argument("port", type=int)
    parser.add_argument("next_hop", type=int, help="port of the sink on 127.0.0.1")
    parser.add_argument("--workers", type=int, default=WORKERS)
    parser.add_argument(
        "--openssl",
        nargs=3,
        metavar=("SIGNER_CERT", "SIGNER_KEY", "RECIPIENT_CERT"),
        help="sign and encrypt each message with the openssl command line",
    )
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
