"""Measure the memory that the crypto step takes for one large message.

Run from the repository root:

    .venv/bin/python -m tests.outgoing.memory_probe --size-mb 30 --direction outgoing

For each measure, a fresh subprocess builds the keys and the message. It then runs
only the S/MIME step: `protect_message` for outgoing (RSA-2048 signer, one RSA-2048
recipient, SHA-256, detached signature, AES-256-CBC), or `IncomingProcessor.open`
for incoming (the message that the benchmark sends: signed by a correspondent and
encrypted to an internal user). `--direction handler` runs the outgoing path as the
crypto service does, with a nats-server that the probe starts: read the message from
the body store, protect it, store the result. It prints two figures, each in MB and
as a multiple of the message size:

- tracemalloc: the peak of Python allocations during the step above those before it;
- VmHWM: the peak resident set of the process during the step above its resident
  set before it, after `/proc/self/clear_refs` reset the peak. The allocator's own
  behaviour is included, as in the benchmark's per-service figure.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import nats

from benchmarks.keys import TestCa
from benchmarks.messages import plain_message, signed_and_encrypted, text_body
from schemas import BodyRef, MailRouted, ProfileSpec
from services.crypto.handlers import StreamedBody, read_in_thread
from services.crypto.incoming import IncomingProcessor
from services.crypto.outgoing import Signer, protect_body, protect_message
from smimegw import streams
from smimegw import x509 as certs
from smimegw.bodies import BodyStore
from smimegw.configstate import BindingEntry, CaEntry, ConfigState
from smimegw.settings import Settings
from tests.harness import NatsServer

MB = 1_000_000
PROFILE = ProfileSpec(
    name="probe",
    action="sign-and-encrypt",
    algorithm="aes256-cbc",
    digest="sha256",
    signature="detached",
    on_failure="bounce",
    encrypt_to_self=False,
)


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} is not in /proc/self/status")


def outgoing_step(size: int, folder: Path) -> tuple[int, Callable[[], object]]:
    """Return the message size and a function that signs and encrypts it."""
    ca = TestCa(folder)
    alice = ca.issue("alice@example.com", "alice")
    bob = ca.issue("bob@example.net", "bob")
    message = plain_message("probe", alice.email, [bob.email], text_body(size, 1))
    # The binding is not read by protect_message.
    signer = Signer(alice.cert, alice.key, (), cast(Any, None))

    def step() -> object:
        return protect_message(message, PROFILE, signer, [bob.cert])

    return len(message), step


def incoming_step(size: int, folder: Path) -> tuple[int, Callable[[], object]]:
    """Return the message size and a function that decrypts and verifies it.

    The function runs IncomingProcessor.open, as the service does, with the
    configuration and the key store replaced by objects that return Alice's
    binding, the CA and Alice's key.
    """
    ca = TestCa(folder)
    carol = ca.issue("carol@partner.example", "carol")
    alice = ca.issue("alice@example.com", "alice")
    message = signed_and_encrypted("probe", carol, alice, text_body(size, 1))
    now = datetime.now(UTC)
    state = ConfigState()
    state.cas["ca"] = CaEntry("ca", ca.cert, certs.facts_of(ca.cert), "ca.pem", now)
    state.bindings["alice"] = BindingEntry(
        "alice", "internal", alice.email, alice.cert, certs.facts_of(alice.cert),
        (), "alice-key", None, "alice.pem", now,
    )  # fmt: skip

    class Follower:
        def __init__(self) -> None:
            self.state = state

        async def sync(self) -> None:
            return None

    class Keys:
        async def get(self, key_id: str) -> object:
            return alice.key

    processor = IncomingProcessor(cast(Any, Follower()), cast(Any, Keys()))
    plan = MailRouted.create(
        plan_id="probe", group=0, groups=1, sender=carol.email,
        recipients=(alice.email,), action="open", reason="probe",
        body=BodyRef(key="probe", size=len(message), sha256="0" * 64, chunks=1),
    )  # fmt: skip

    def step() -> object:
        result = asyncio.run(processor.open(plan, message))
        assert result.operations, "the probe message was not opened"
        return result

    return len(message), step


def run_handler(size: int, measure: str) -> None:
    """Measure the outgoing path of the crypto handler with a real nats-server.

    As CryptoHandlers._transform does, the message is read from the body store,
    protected and stored again. A small message first warms imports and the
    connection, so the figure is that of a large message in a service that has
    handled only small ones, as in the benchmark.
    """
    with tempfile.TemporaryDirectory() as folder:
        server = NatsServer(Path(folder) / "nats")
        server.start()
        try:
            message_size, peak, elapsed = asyncio.run(
                _handle_large(server.url, size, measure, Path(folder))
            )
        finally:
            server.stop()
    print(
        f"handler {message_size / MB:.1f} MB {measure}: +{peak / MB:.0f} MB "
        f"({peak / message_size:.2f} x message), {elapsed:.2f} s"
    )


async def _handle_large(
    url: str, size: int, measure: str, folder: Path
) -> tuple[int, int, float]:
    client = await nats.connect(url)
    try:
        await streams.provision(client.jetstream(), Settings(data_dir=folder))
        store = BodyStore(client, client.jetstream())
        ca = TestCa(folder / "keys")
        alice = ca.issue("alice@example.com", "alice")
        bob = ca.issue("bob@example.net", "bob")
        signer = Signer(alice.cert, alice.key, (), cast(Any, None))

        async def handle(ref: BodyRef) -> None:
            received = await store.get(ref)
            body = await asyncio.to_thread(
                protect_body, received, PROFILE, signer, [bob.cert], "aes256-cbc"
            )
            del received
            if isinstance(body, StreamedBody):
                await store.put_chunks(f"{ref.key}-out", read_in_thread(body.chunks))
            else:
                await store.put(f"{ref.key}-out", body)

        # Another process stores the messages, so that building them leaves no
        # freed memory in this one for the measured step to reuse.
        context = multiprocessing.get_context("spawn")
        with context.Pool(1) as pool:
            warm, large = pool.starmap(
                _store_message,
                [(url, "warm", 10_000), (url, "large", size)],
            )
        await handle(BodyRef.model_validate_json(warm))
        ref = BodyRef.model_validate_json(large)
        started = time.perf_counter()
        if measure == "tracemalloc":
            tracemalloc.start()
            base = tracemalloc.get_traced_memory()[0]
            await handle(ref)
            peak = tracemalloc.get_traced_memory()[1] - base
            tracemalloc.stop()
        else:
            Path("/proc/self/clear_refs").write_text("5")
            base = _status_kib("VmRSS") * 1024
            await handle(ref)
            peak = _status_kib("VmHWM") * 1024 - base
        return ref.size, peak, time.perf_counter() - started
    finally:
        await client.close()


def _store_message(url: str, key: str, size: int) -> str:
    """Store a text message of `size` bytes of body; return its BodyRef as JSON."""

    async def store() -> str:
        client = await nats.connect(url)
        try:
            body = text_body(size, 1)
            message = plain_message(key, "alice@example.com", ["bob@example.net"], body)
            ref = await BodyStore(client, client.jetstream()).put(key, message)
            return ref.model_dump_json()
        finally:
            await client.close()

    return asyncio.run(store())


def run_one(direction: str, size: int, measure: str) -> None:
    """Build and run the step once in this process and print one result line."""
    if direction == "handler":
        run_handler(size, measure)
        return
    with tempfile.TemporaryDirectory() as folder:
        build = outgoing_step if direction == "outgoing" else incoming_step
        message_size, step = build(size, Path(folder))
        step()  # warm caches and imports, so they do not count below
        if measure == "tracemalloc":
            tracemalloc.start()
            base = tracemalloc.get_traced_memory()[0]
            started = time.perf_counter()
            step()
            elapsed = time.perf_counter() - started
            peak = tracemalloc.get_traced_memory()[1] - base
            tracemalloc.stop()
        else:
            Path("/proc/self/clear_refs").write_text("5")
            base = _status_kib("VmRSS") * 1024
            started = time.perf_counter()
            step()
            elapsed = time.perf_counter() - started
            peak = _status_kib("VmHWM") * 1024 - base
    print(
        f"{direction} {message_size / MB:.1f} MB {measure}: +{peak / MB:.0f} MB "
        f"({peak / message_size:.2f} x message), {elapsed:.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=30.0, help="body size in MB")
    parser.add_argument(
        "--direction",
        choices=("outgoing", "incoming", "handler"),
        default="outgoing",
        help="handler: outgoing with the body store, as the crypto service runs it",
    )
    parser.add_argument(
        "--measure", choices=("tracemalloc", "vmhwm", "both"), default="both"
    )
    args = parser.parse_args()
    size = int(args.size_mb * MB)
    if args.measure != "both":
        run_one(args.direction, size, args.measure)
        return
    for measure in ("tracemalloc", "vmhwm"):
        command = [
            sys.executable, "-m", "tests.outgoing.memory_probe",
            "--size-mb", str(args.size_mb), "--direction", args.direction,
            "--measure", measure,
        ]  # fmt: skip
        subprocess.run(command, check=True, timeout=600)


if __name__ == "__main__":
    main()
