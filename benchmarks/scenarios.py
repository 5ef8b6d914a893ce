"""The scenarios and baselines of `python -m benchmarks`, each returning Results."""

from __future__ import annotations

import asyncio
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import algorithms
from cryptography.hazmat.primitives.serialization import Encoding, pkcs7

from benchmarks import messages
from benchmarks.gateway import (
    CommandResult,
    GatewayProcess,
    ServerProcess,
    command_exists,
    free_port,
)
from benchmarks.keys import Identity, TestCa
from benchmarks.load import MessageSource, Outgoing, percentile
from benchmarks.measure import SINK, Bounds, Result, measure_single, measure_smtp, say

MESSAGE_SIZE = 100_000
LARGE_SIZE = 30_000_000
MANY_RECIPIENTS = 50
SENDER = "sender@example.com"
INTERNAL_USER = "user@example.com"
EXTERNAL_SENDER = "correspondent@partner.example"


@dataclass
class Context:
    """Keys, sink and limits shared by every scenario."""

    directory: Path
    bounds: Bounds
    sink_port: int
    sink_log: Path
    sink_pid: int
    ca: TestCa
    sender: Identity
    partner: Identity
    internal: Identity
    correspondent: Identity
    many: list[Identity] = field(default_factory=list)
    body: bytes = b""

    @classmethod
    def create(
        cls, directory: Path, bounds: Bounds, sink: ServerProcess, port: int
    ) -> Context:
        keys = directory / "keys"
        ca = TestCa(keys)
        context = cls(
            directory=directory,
            bounds=bounds,
            sink_port=port,
            sink_log=directory / "sink.log",
            sink_pid=sink.pid,
            ca=ca,
            sender=ca.issue(SENDER, "sender"),
            # Outgoing mail goes to bench-ID@partner.example, bound by domain.
            partner=ca.issue("bench@partner.example", "partner"),
            internal=ca.issue(INTERNAL_USER, "internal"),
            correspondent=ca.issue(EXTERNAL_SENDER, "correspondent"),
        )
        context.body = messages.text_body(MESSAGE_SIZE - 400, seed=1)
        return context

    def plain_source(self, tag: str) -> MessageSource:
        """100 KB messages from SENDER, one recipient each, ids `<tag><n>`."""

        def source(index: int) -> Outgoing:
            bench_id = f"{tag}{index}"
            recipients = [f"bench-{bench_id}@partner.example"]
            data = messages.plain_message(bench_id, SENDER, recipients, self.body)
            return bench_id, SENDER, recipients, data

        return source

    def large_message(self, tag: str) -> Outgoing:
        repeats = LARGE_SIZE // len(self.body) + 1
        body = (self.body * repeats)[: LARGE_SIZE - 400]
        body = body[: body.rfind(b"\r\n") + 2]
        recipients = [f"bench-{tag}@partner.example"]
        return (
            tag,
            SENDER,
            recipients,
            messages.plain_message(tag, SENDER, recipients, body),
        )


def _not_available(name: str, group: str, reason: str) -> Result:
    return Result(name=name, group=group, status=f"not available yet: {reason}")


# The baselines.


def _sign_and_encrypt(
    data: bytes, signer: Identity, recipient: Identity, encoding: Encoding
) -> bytes:
    sign_options = [pkcs7.PKCS7Options.DetachedSignature]
    if encoding is Encoding.DER:
        sign_options.append(pkcs7.PKCS7Options.Binary)
    signed = (
        pkcs7.PKCS7SignatureBuilder()
        .set_data(data)
        .add_signer(signer.cert, signer.key, hashes.SHA256())
        .sign(encoding, sign_options)
    )
    return (
        pkcs7.PKCS7EnvelopeBuilder()
        .set_data(signed)
        .add_recipient(recipient.cert)
        .set_content_encryption_algorithm(algorithms.AES256)
        .encrypt(encoding, [])
    )


def crypto_alone(context: Context, encoding: Encoding, name: str) -> Result:
    """Sign then encrypt the same 100 KB messages with cryptography in this process."""
    result = Result(name=name, group="baseline", message_size=MESSAGE_SIZE)
    source = context.plain_source("c")
    durations: list[float] = []
    deadline = time.monotonic() + context.bounds.saturation_seconds / 2
    result.load = os.getloadavg()[0]

    cpu_start = time.process_time()
    wall_start = time.perf_counter()
    for index in range(context.bounds.max_messages):
        if time.monotonic() >= deadline:
            break
        data = source(index)[3]
        started = time.perf_counter()
        _sign_and_encrypt(data, context.sender, context.partner, encoding)
        durations.append((time.perf_counter() - started) * 1000)
    wall = time.perf_counter() - wall_start
    cpu = time.process_time() - cpu_start

    result.messages = len(durations)
    result.throughput = len(durations) / wall
    latency = {f"p{int(q * 100)}": percentile(durations, q) for q in (0.5, 0.95, 0.99)}
    result.latency_ms = latency
    result.cpu_ms = {
        "harness": cpu * 1000 / len(durations),
        "total": cpu * 1000 / len(durations),
    }
    result.notes.append(
        f"one process, one thread; mean {statistics.fmean(durations):.2f} ms "
        "per message; latency is the time of sign plus encrypt"
    )
    return result


async def smtp_baseline(context: Context, name: str, *filter_args: str) -> Result:
    """Measure the bare relay, or with `--openssl ...` the OpenSSL content filter."""
    result = Result(name=name, group="baseline", message_size=MESSAGE_SIZE)
    port = free_port()
    server = ServerProcess(
        "benchmarks.relay",
        str(port),
        str(context.sink_port),
        *filter_args,
        log_path=context.directory / f"relay-{port}.log",
    )
    server.start(port)
    try:
        pids = {"relay": server.pid, SINK: context.sink_pid}
        await measure_smtp(
            result,
            port,
            lambda phase: context.plain_source(f"{name[:1]}{port}{phase}"),
            pids,
            context.sink_log,
            context.bounds,
        )
    finally:
        server.stop()
    return result


# The gateway.


def _gateway_pids(gateway: GatewayProcess, context: Context) -> dict[str, int]:
    return dict(gateway.pids(), **{SINK: context.sink_pid})


async def _large(
    context: Context, gateway: GatewayProcess, name: str, tag: str
) -> Result:
    result = Result(name=name, group="gateway")
    say(f"{name}: one {LARGE_SIZE / 1e6:.0f} MB message")
    await measure_single(
        result,
        gateway.smtp_port,
        context.large_message(tag),
        _gateway_pids(gateway, context),
        context.sink_log,
        context.bounds,
    )
    return result


async def gateway_plain(context: Context) -> list[Result]:
    """Pass-through of 100 KB messages and of one 30 MB message."""
    gateway = GatewayProcess(context.directory / "gw-plain", context.sink_port)
    say("starting the gateway for pass-through")
    gateway.start()
    try:
        pids = _gateway_pids(gateway, context)
        through = Result(
            name="gateway: pass-through", group="gateway", message_size=MESSAGE_SIZE
        )
        await measure_smtp(
            through,
            gateway.smtp_port,
            lambda phase: context.plain_source(f"p{phase}"),
            pids,
            context.sink_log,
            context.bounds,
        )
        large = await _large(
            context, gateway, "gateway: 30 MB pass-through", "large-plain"
        )
        return [through, large]
    finally:
        gateway.stop()


async def _wait_for_commands(
    gateway: GatewayProcess, timeout: float = 60.0
) -> str | None:
    """Wait until the policy service replies to commands; a reason if it never did."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = await asyncio.to_thread(gateway.cli, "ca", "list")
        if outcome.status == 0:
            return None
        if time.monotonic() >= deadline:
            output = outcome.output.strip()
            return f"`smimegw ca list` still failed after {timeout:.0f} s: {output}"
        await asyncio.sleep(0.5)


async def _retry_until_served(
    gateway: GatewayProcess, argv: list[str], timeout: float = 60.0
) -> CommandResult:
    """Run a CLI command, again while the service behind it has not subscribed yet."""
    deadline = time.monotonic() + timeout
    while True:
        outcome = await asyncio.to_thread(gateway.cli, *argv)
        if "no service responds to" not in outcome.output:
            return outcome
        if time.monotonic() >= deadline:
            return outcome
        await asyncio.sleep(0.5)


async def _configure(gateway: GatewayProcess, steps: list[list[str]]) -> str | None:
    """Run CLI commands in order; the first failure's reason, or None.

    The CLI runs its own event loop, so each command runs in a worker thread.
    """
    ready = await _wait_for_commands(gateway)
    if ready is not None:
        return ready
    for argv in steps:
        outcome = await _retry_until_served(gateway, argv)
        if outcome.status != 0:
            lines = [line for line in outcome.output.splitlines() if line.strip()]
            shown = " ".join(argv[:3])
            return f"`smimegw {shown}` failed: {lines[-1] if lines else outcome.status}"
    return None


async def _probe(
    context: Context, gateway: GatewayProcess, message: Outgoing, want_enveloped: bool
) -> str | None:
    """Send one message; a reason when it did not arrive with the expected form."""
    probe = Result(name="probe", group="gateway")
    arrivals = await measure_single(
        probe,
        gateway.smtp_port,
        message,
        {},
        context.sink_log,
        context.bounds,
        timeout=60.0,
    )
    if not probe.ok:
        return f"the probe message {probe.status.removeprefix('failed: ')}"
    if any(a.enveloped != want_enveloped for a in arrivals):
        form = "without encryption" if want_enveloped else "still encrypted"
        return f"the gateway delivered the probe message {form}"
    return None


OUTGOING_NAMES = (
    "gateway: sign and encrypt",
    "gateway: 50 recipients, sign and encrypt",
    "gateway: 30 MB sign and encrypt",
)


async def gateway_outgoing(context: Context) -> list[Result]:
    """Sign-and-encrypt of 100 KB messages, one to 50 recipients, one of 30 MB."""
    missing = [
        words
        for words in (("profile", "create"), ("rule", "create"))
        if not command_exists(*words)
    ]
    if missing:
        absent = f"`smimegw {' '.join(missing[0])}` does not exist"
        return [_not_available(name, "gateway", absent) for name in OUTGOING_NAMES]
    gateway = GatewayProcess(context.directory / "gw-outgoing", context.sink_port)
    say("starting the gateway for sign and encrypt")
    gateway.start()
    try:
        reason: str | None = await _configure(
            gateway,
            [
                ["ca", "import", str(context.ca.cert_path)],
                [
                    "binding",
                    "create",
                    "internal",
                    SENDER,
                    "--cert",
                    str(context.sender.cert_path),
                    "--key",
                    str(context.sender.key_path),
                ],
                [
                    "binding",
                    "create",
                    "external",
                    "@partner.example",
                    "--cert",
                    str(context.partner.cert_path),
                ],
                [
                    "profile",
                    "create",
                    "bench",
                    "--action",
                    "sign-and-encrypt",
                    "--algorithm",
                    "aes256-cbc",
                    "--digest",
                    "sha256",
                ],
                ["rule", "create", "--profile", "bench", "--recipient", "*"],
            ],
        )
        if reason is None:
            reason = await _probe(
                context,
                gateway,
                context.plain_source("probe-out")(0),
                want_enveloped=True,
            )
        if reason is not None:
            return [_not_available(name, "gateway", reason) for name in OUTGOING_NAMES]

        pids = _gateway_pids(gateway, context)
        signed = Result(
            name=OUTGOING_NAMES[0], group="gateway", message_size=MESSAGE_SIZE
        )
        await measure_smtp(
            signed,
            gateway.smtp_port,
            lambda phase: context.plain_source(f"o{phase}"),
            pids,
            context.sink_log,
            context.bounds,
        )
        many = await _many_recipients(context, gateway, pids)
        large = await _large(context, gateway, OUTGOING_NAMES[2], "large-signed")
        return [signed, many, large]
    finally:
        gateway.stop()


async def _many_recipients(
    context: Context, gateway: GatewayProcess, pids: dict[str, int]
) -> Result:
    result = Result(name=OUTGOING_NAMES[1], group="gateway")
    say(f"{result.name}: {MANY_RECIPIENTS} external bindings")
    steps = [
        [
            "binding",
            "create",
            "external",
            identity.email,
            "--cert",
            str(identity.cert_path),
        ]
        for identity in context.many
    ]
    reason = await _configure(gateway, steps)
    if reason is not None:
        result.status = f"failed: {reason}"
        return result
    recipients = [identity.email for identity in context.many]
    data = messages.plain_message("many", SENDER, recipients, context.body)
    await measure_single(
        result,
        gateway.smtp_port,
        ("many", SENDER, recipients, data),
        pids,
        context.sink_log,
        context.bounds,
    )
    return result


def issue_many(context: Context) -> None:
    context.many = [
        context.ca.issue(f"r{index:02d}@many.example", f"many-{index:02d}")
        for index in range(1, MANY_RECIPIENTS + 1)
    ]


INCOMING_NAME = "gateway: decrypt and verify"


async def gateway_incoming(context: Context) -> list[Result]:
    """Incoming 100 KB messages signed by a correspondent and encrypted to our user."""
    gateway = GatewayProcess(context.directory / "gw-incoming", context.sink_port)
    say("starting the gateway for decrypt and verify")
    gateway.start()
    try:
        reason = await _configure(
            gateway,
            [
                ["ca", "import", str(context.ca.cert_path)],
                [
                    "binding",
                    "create",
                    "internal",
                    INTERNAL_USER,
                    "--cert",
                    str(context.internal.cert_path),
                    "--key",
                    str(context.internal.key_path),
                ],
                [
                    "binding",
                    "create",
                    "external",
                    EXTERNAL_SENDER,
                    "--cert",
                    str(context.correspondent.cert_path),
                ],
            ],
        )
        if reason is None:
            reason = await _probe(
                context,
                gateway,
                _incoming_message(context, "probe-in"),
                want_enveloped=False,
            )
        if reason is not None:
            return [_not_available(INCOMING_NAME, "gateway", reason)]
        result = Result(name=INCOMING_NAME, group="gateway", message_size=MESSAGE_SIZE)
        say(f"{INCOMING_NAME}: signing and encrypting the test messages")
        prepared = {
            phase: [_incoming_message(context, f"i{phase}{n}") for n in range(count)]
            for phase, count in (
                ("w", context.bounds.warmup_messages),
                ("s", context.bounds.max_messages),
                ("h", context.bounds.max_messages // 2),
            )
        }
        result.message_size = len(prepared["s"][0][3])
        await measure_smtp(
            result,
            gateway.smtp_port,
            lambda phase: _prepared_source(context, phase, prepared[phase]),
            _gateway_pids(gateway, context),
            context.sink_log,
            context.bounds,
        )
        return [result]
    finally:
        gateway.stop()


def _prepared_source(
    context: Context, phase: str, prepared: list[Outgoing]
) -> MessageSource:
    """Return the prepared messages, then more made on demand if a phase needs them."""

    def source(index: int) -> Outgoing:
        if index < len(prepared):
            return prepared[index]
        return _incoming_message(context, f"i{phase}{index}")

    return source


def _incoming_message(context: Context, bench_id: str) -> Outgoing:
    data = messages.signed_and_encrypted(
        bench_id, context.correspondent, context.internal, context.body
    )
    return bench_id, EXTERNAL_SENDER, [INTERNAL_USER], data


def machine_facts() -> dict[str, str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = "unknown"
    try:
        first = Path("/proc/meminfo").read_text().splitlines()[0]
        memory = f"{int(first.split()[1]) / 1024 / 1024:.1f} GiB"
    except (OSError, IndexError, ValueError):
        pass
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    return {
        "nproc": str(os.cpu_count()),
        "model": model,
        "memory": memory,
        "load": load,
    }
