"""`python -m benchmarks.soak`: many messages through a cluster under random kills.

Starts a three-node nats-server cluster, two replicas of every service and a
sink SMTP server, all on 127.0.0.1 in a temporary directory. While SMTP clients
send `--messages` messages, a chaos loop SIGKILLs a random service replica or
NATS node every few seconds and starts it again shortly after, as an
orchestrator would. At the end it reports:

- lost: messages answered 250 that never reached the sink (must be 0);
- duplicated: messages that reached the sink more than once, split into copies
  sent by the client after a lost reply and copies made by the gateway;
- recovery: for each kill, how long until every message accepted before it had
  arrived;
- the duplicate window: for each message, the time from the sink's `250` to the
  delivery record in JetStream (the stream message's server timestamp). A crash
  inside this window sends the message again.

Results go to stdout and benchmarks/soak/results/<time>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nats
from aiosmtpd.smtp import SMTP, Envelope, Session
from nats.js.errors import NotFoundError

from services.crypto import keyvault
from smimegw import parking, streams
from smimegw.service import SERVICE_NAMES
from smimegw.settings import Settings
from tests.cluster import (
    MAIL_CONSUMERS,
    Fleet,
    LoadResult,
    NatsCluster,
    Replica,
    consumers_settled,
    index_of,
    send_load,
    write_config,
)
from tests.harness import free_port

RESULTS = Path(__file__).resolve().parent / "results"
# The whole run stops after this long, finished or not.
TIME_BUDGET = 1200.0


@dataclass
class Arrival:
    index: int
    replied_at: float  # wall clock, comparable with JetStream's timestamps
    monotonic: float


@dataclass
class TimedSink:
    """An SMTP sink that records when it answered 250 to each message."""

    arrivals: list[Arrival] = field(default_factory=list)
    server: asyncio.Server | None = None
    port: int = 0

    async def handle_DATA(
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        index = index_of(envelope.original_content or b"")
        self.arrivals.append(Arrival(index, time.time(), time.monotonic()))
        return "250 2.0.0 Ok: stored"

    async def start(self) -> None:
        self.port = free_port()

        def factory() -> SMTP:
            return SMTP(self, decode_data=False)

        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(factory, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()


@dataclass
class Kill:
    target: str
    at: float
    restarted_at: float = 0.0
    ready_at: float = 0.0


async def wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        return


async def chaos(
    cluster: NatsCluster,
    fleet: Fleet,
    stop: asyncio.Event,
    rng: random.Random,
    kills: list[Kill],
    *,
    interval: tuple[float, float],
    max_kills: int,
) -> None:
    """SIGKILL a random replica or NATS node, start it again after a pause."""
    while not stop.is_set() and len(kills) < max_kills:
        try:
            await asyncio.wait_for(stop.wait(), timeout=rng.uniform(*interval))
            return
        except TimeoutError:
            pass
        if rng.random() < 0.2:
            node = rng.choice(cluster.nodes)
            cluster.kill(node)
            kill = Kill(f"nats {node.name}", time.monotonic())
            kills.append(kill)
            await asyncio.sleep(rng.uniform(2.0, 5.0))
            cluster.start_node(node)
            kill.restarted_at = time.monotonic()
            await wait_for_port(node.port, timeout=30)
        else:
            replica: Replica = rng.choice(fleet.replicas)
            fleet.signal(replica, signal.SIGKILL)
            await fleet.wait_exit(replica, timeout=15)
            kill = Kill(replica.name, time.monotonic())
            kills.append(kill)
            await asyncio.sleep(rng.uniform(0.5, 2.0))
            fleet.spawn(replica)
            kill.restarted_at = time.monotonic()
            await fleet.wait_ready([replica], timeout=60)
        kill.ready_at = time.monotonic()
        print(f"  killed {kill.target}; started again", flush=True)


async def record_times(url: str) -> dict[int, float]:
    """Load index -> wall time at which delivery's record of it was stored."""
    nc = await nats.connect(url.split(","))
    stream = f"KV_{streams.DELIVERY_BUCKET}"
    found: dict[int, float] = {}
    try:
        js = nc.jetstream(timeout=10)
        sequence = 1
        for _ in range(1_000_000):
            try:
                message = await js.get_msg(stream, seq=sequence, subject=">", next=True)
            except NotFoundError:
                break
            sequence = (message.seq or sequence) + 1
            if message.time is None or not message.data:
                continue
            state = json.loads(message.data)
            for outcome in state.get("outcomes", []):
                for recipient in outcome["recipients"]:
                    index = int(recipient.split("@")[0].removeprefix("user"))
                    found.setdefault(index, message.time.timestamp())
    finally:
        await nc.close()
    return found


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def summary(values: list[float]) -> dict[str, float]:
    return {
        "count": len(values),
        "median": round(statistics.median(values), 4) if values else 0.0,
        "p99": round(percentile(values, 0.99), 4),
        "max": round(max(values), 4) if values else 0.0,
    }


async def soak(args: argparse.Namespace, base: Path) -> dict[str, Any]:
    rng = random.Random(args.seed)
    sink = TimedSink()
    await sink.start()
    settings = Settings(
        data_dir=base / "var",
        nats={"replicas": 3},
        bus={"ack_wait": f"{args.ack_wait}s"},
        delivery={"relay_host": f"127.0.0.1:{sink.port}", "connect_timeout": "3s"},
        smtp={"hostname": "soak.test"},
    )
    settings.kek_path.parent.mkdir(parents=True, exist_ok=True)
    keyvault.create_kek(settings.kek_path)
    cluster = NatsCluster(base / "nats")
    cluster.start()
    fleet = Fleet(write_config(base / "gw.toml", settings), cluster.urls, base)
    for name in SERVICE_NAMES:
        fleet.add(name, 2)
    try:
        await cluster.wait_for_jetstream(settings)
        await fleet.start()
        print(f"cluster and {len(fleet.replicas)} replicas ready in {base}", flush=True)

        started = time.monotonic()
        result = LoadResult()
        stop = asyncio.Event()
        kills: list[Kill] = []
        chaos_task = asyncio.create_task(
            chaos(
                cluster,
                fleet,
                stop,
                rng,
                kills,
                interval=(args.kill_every * 0.5, args.kill_every * 1.5),
                max_kills=args.max_kills,
            )
        )

        await send_load(
            fleet.smtp_ports,
            range(args.messages),
            connections=args.connections,
            result=result,
            deadline=TIME_BUDGET,
            rate=args.rate or None,
        )
        sent_seconds = time.monotonic() - started
        stop.set()
        await chaos_task
        accepted_at = result.accepted_at
        # Every killed process runs again; wait until all of them are ready.
        for node in cluster.nodes:
            if not node.alive:
                cluster.start_node(node)
        await fleet.wait_ready(timeout=120)

        deadline = time.monotonic() + args.drain_timeout
        while time.monotonic() < deadline:
            if len({a.index for a in sink.arrivals}) >= len(result.accepted):
                break
            await asyncio.sleep(0.5)
        all_arrived_after = time.monotonic() - started
        settled = False
        for _ in range(60):
            if await consumers_settled(cluster.urls, MAIL_CONSUMERS):
                settled = True
                break
            await asyncio.sleep(0.5)

        first_arrival: dict[int, Arrival] = {}
        for arrival in sink.arrivals:
            first_arrival.setdefault(arrival.index, arrival)
        lost = sorted(set(result.accepted) - set(first_arrival))
        copies = Counter(a.index for a in sink.arrivals)
        client_resent = {i for i, ids in result.accepted.items() if len(ids) > 1}
        duplicated = {i for i, n in copies.items() if n > 1}
        # Each queue id answered 250 should arrive once; more is the gateway's.
        gateway_copies = sum(
            max(0, n - len(result.accepted.get(i, []))) for i, n in copies.items()
        )

        # Per kill: how long until every message accepted in the 5 s before it
        # had arrived. A killed process may have held some of them, and those
        # wait for ack_wait. Also the longest pause between arrivals in the
        # 30 s after the kill, and the restarted process's time to ready.
        arrival_times = sorted(a.monotonic for a in sink.arrivals)
        recovery = []
        for kill in kills:
            in_flight = [
                first_arrival[i].monotonic - kill.at
                for i, t in accepted_at.items()
                if kill.at - 5 <= t < kill.at and i in first_arrival
            ]
            window = [kill.at] + [
                t for t in arrival_times if kill.at < t <= kill.at + 30
            ]
            gaps = [b - a for a, b in itertools.pairwise(window)]
            recovery.append(
                {
                    "target": kill.target,
                    "in_flight_arrived_s": round(max(in_flight, default=0), 2),
                    "longest_pause_s": round(max(gaps, default=0), 2),
                    "restart_to_ready_s": round(kill.ready_at - kill.restarted_at, 2),
                }
            )
        latencies = [
            first_arrival[i].monotonic - accepted_at[i]
            for i in first_arrival
            if i in accepted_at
        ]
        recorded = await record_times(cluster.urls)
        # From the 250 that the record is about: the last one before it.
        replies: dict[int, list[float]] = {}
        for arrival in sink.arrivals:
            replies.setdefault(arrival.index, []).append(arrival.replied_at)
        windows = []
        for index, at in recorded.items():
            before = [t for t in replies.get(index, []) if t <= at]
            if before:
                windows.append(at - max(before))
        nc = await nats.connect(cluster.urls.split(","))
        try:
            js = nc.jetstream()
            parked = (await js.stream_info(streams.PARKED)).state.messages
            parked_reasons = Counter(
                f"{m.stage}: {m.reason[:160]}"
                for m in await parking.list_parked(js, limit=1000)
            )
        finally:
            await nc.close()
        return {
            "time": datetime.now(UTC).isoformat(timespec="seconds"),
            "messages": args.messages,
            "accepted": len(result.accepted),
            "lost": len(lost),
            "lost_indexes": lost[:50],
            "duplicated_messages": len(duplicated),
            "extra_copies": len(sink.arrivals) - len(first_arrival),
            "client_resent_messages": len(client_resent),
            "gateway_copies": gateway_copies,
            "client_retries": result.resends,
            "parked": parked,
            "parked_reasons": dict(parked_reasons),
            "consumers_settled": settled,
            "kills": len(kills),
            "kill_targets": dict(Counter(k.target.split("-")[0] for k in kills)),
            "recovery_seconds": summary([r["in_flight_arrived_s"] for r in recovery]),
            "longest_pause_seconds": summary([r["longest_pause_s"] for r in recovery]),
            "restart_to_ready_seconds": summary(
                [r["restart_to_ready_s"] for r in recovery]
            ),
            "recovery_by_kill": recovery,
            "send_seconds": round(sent_seconds, 1),
            "all_arrived_seconds": round(all_arrived_after, 1),
            "latency_seconds": summary(latencies),
            "duplicate_window_seconds": summary(windows),
            "ack_wait_seconds": args.ack_wait,
            "rate": args.rate,
            "seed": args.seed,
        }
    finally:
        fleet.stop()
        cluster.stop()
        await sink.stop()


def report(figures: dict[str, Any]) -> str:
    lines = [
        f"soak of {figures['messages']} messages, {figures['kills']} kills "
        f"({figures['kill_targets']}), seed {figures['seed']}",
        f"  lost: {figures['lost']}",
        f"  duplicated: {figures['duplicated_messages']} messages "
        f"({figures['extra_copies']} extra copies: {figures['gateway_copies']} by "
        f"the gateway, the rest resent by the client after a lost reply)",
        f"  parked: {figures['parked']}; consumers settled: "
        f"{figures['consumers_settled']}",
        *(f"    {n} x {reason}" for reason, n in figures["parked_reasons"].items()),
        f"  in-flight messages arrived after a kill (s): "
        f"{figures['recovery_seconds']} (ack_wait {figures['ack_wait_seconds']} s)",
        f"  longest pause in arrivals after a kill (s): "
        f"{figures['longest_pause_seconds']}",
        f"  restarted process ready after (s): {figures['restart_to_ready_seconds']}",
        f"  end-to-end latency (s): {figures['latency_seconds']}",
        f"  duplicate window, 250 to record (s): {figures['duplicate_window_seconds']}",
        f"  sent in {figures['send_seconds']} s; all arrived after "
        f"{figures['all_arrived_seconds']} s",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.soak")
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument(
        "--rate",
        type=float,
        default=30.0,
        help="messages a second in total; 0 sends as fast as the gateway accepts",
    )
    parser.add_argument("--kill-every", type=float, default=6.0, help="seconds")
    parser.add_argument("--max-kills", type=int, default=60)
    parser.add_argument("--ack-wait", type=float, default=10.0, help="seconds")
    parser.add_argument("--drain-timeout", type=float, default=240.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    # Kept when the run fails, for the service and server logs in it.
    directory = Path(tempfile.mkdtemp(prefix="smimegw-soak-"))
    try:
        figures = asyncio.run(
            asyncio.wait_for(soak(args, directory), timeout=TIME_BUDGET)
        )
    except BaseException:
        print(f"soak failed; logs are in {directory}", file=sys.stderr)
        raise
    shutil.rmtree(directory)
    print(report(figures))
    RESULTS.mkdir(exist_ok=True)
    stamp = figures["time"].replace(":", "").replace("+0000", "Z")
    (RESULTS / f"{stamp}.json").write_text(json.dumps(figures, indent=2) + "\n")
    return 1 if figures["lost"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
