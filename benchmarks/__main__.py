"""`python -m benchmarks`: the gateway and its baselines, measured in one run.

Starts a sink SMTP server, the baselines and the gateway (`smimegw run`) on
free 127.0.0.1 ports in a temporary directory, drives each with the load
generator, prints the figures and the targets, and writes
benchmarks/results/<time>.md and .png and the latest figures into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding

from benchmarks import profiling, report, scenarios
from benchmarks.gateway import REPO, ServerProcess, free_port
from benchmarks.measure import Bounds, Result, say

RESULTS = REPO / "benchmarks" / "results"
COMMAND = "make bench"
# A run that has used this much time skips the scenarios it has not started.
TIME_BUDGET = 540.0

SCENARIOS = ("crypto", "relay", "openssl", "plain", "outgoing", "incoming")

QUICK = Bounds(
    connections=8,
    max_messages=300,
    saturation_seconds=5.0,
    half_rate_seconds=4.0,
    drain_seconds=30.0,
    warmup_messages=10,
)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument(
        "--only",
        action="append",
        choices=SCENARIOS,
        help="run only this group of scenarios (repeatable)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="short phases with few messages, for checking the harness",
    )
    parser.add_argument(
        "--connections", type=int, help="concurrent SMTP connections (default 16)"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="record each process with py-spy during every saturation phase",
    )
    parser.add_argument(
        "--no-save",
        action="store_true",
        help="print only; write nothing under benchmarks/results or BENCHMARKS.md",
    )
    return parser.parse_args()


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "smimegw", "services", "schemas"],
        cwd=REPO,
        capture_output=True,
        text=True,
    ).stdout.strip()
    return out.stdout.strip() + (" (with uncommitted changes)" if dirty else "")


async def run_all(
    args: argparse.Namespace, directory: Path, bounds: Bounds
) -> list[Result]:
    sink_port = free_port()
    sink = ServerProcess(
        "benchmarks.sink",
        str(sink_port),
        str(directory / "sink.log"),
        log_path=directory / "sink.out",
    )
    sink.start(sink_port)
    try:
        say("generating the test CA and RSA-2048 keys")
        context = scenarios.Context.create(directory, bounds, sink, sink_port)
        selected = args.only or list(SCENARIOS)
        if "outgoing" in selected:
            scenarios.issue_many(context)
        steps: dict[str, Callable[[], Awaitable[list[Result]]]] = {
            "crypto": lambda: _crypto(context),
            "relay": lambda: _one(scenarios.smtp_baseline(context, report.BARE_RELAY)),
            "openssl": lambda: _one(
                scenarios.smtp_baseline(
                    context,
                    report.OPENSSL_FILTER,
                    "--openssl",
                    str(context.sender.cert_path),
                    str(context.sender.key_path),
                    str(context.partner.cert_path),
                )
            ),
            "plain": lambda: scenarios.gateway_plain(context),
            "outgoing": lambda: scenarios.gateway_outgoing(context),
            "incoming": lambda: scenarios.gateway_incoming(context),
        }
        started = time.monotonic()
        results: list[Result] = []
        for name in SCENARIOS:
            if name not in selected:
                continue
            if time.monotonic() - started > TIME_BUDGET:
                results.append(
                    Result(name=name, group="-", status="skipped: time budget used up")
                )
                continue
            try:
                results.extend(await steps[name]())
            except (RuntimeError, OSError, ValueError) as err:
                say(f"{name} failed: {type(err).__name__}: {err}")
                results.append(
                    Result(name=name, group="-", status=f"failed: {err}"[:300])
                )
        return results
    finally:
        sink.stop()


async def _one(result: Awaitable[Result]) -> list[Result]:
    return [await result]


async def _crypto(context: scenarios.Context) -> list[Result]:
    found = []
    for encoding, name in (
        (Encoding.SMIME, "crypto alone (S/MIME output)"),
        (Encoding.DER, "crypto alone (DER output)"),
    ):
        say(f"{name}: signing and encrypting in one process")
        found.append(scenarios.crypto_alone(context, encoding, name))
    return found


def main() -> int:
    args = parse_args()
    bounds = QUICK if args.quick else Bounds()
    if args.connections:
        bounds = dataclasses.replace(bounds, connections=args.connections)
    if args.profile:
        if profiling.available() is None:
            say("py-spy is not installed; running without --profile")
        else:
            bounds = dataclasses.replace(bounds, profile_dir=args.profile.resolve())
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%SZ")
    with tempfile.TemporaryDirectory(prefix="smimegw-bench-") as temporary:
        results = asyncio.run(run_all(args, Path(temporary), bounds))
    facts = scenarios.machine_facts()
    found = report.targets({r.name: r for r in results}, int(facts["nproc"]))

    print()
    print("\n".join(report.summary_table(results)))
    print()
    print("\n".join(report.target_table(found)))
    print()
    print("\n".join(report.process_table(results)))
    for result in results:
        for note in result.notes:
            print(f"note: {result.name}: {note}")

    header = {
        "stamp": stamp,
        "command": f"`{COMMAND}`" + (" (--quick)" if args.quick else ""),
        "commit": git_commit(),
        "bounds": (
            f"{bounds.connections} connections; saturation at most "
            f"{bounds.max_messages} messages or {bounds.saturation_seconds:.0f} s; "
            f"half rate for {bounds.half_rate_seconds:.0f} s"
        ),
    }
    if args.no_save:
        return 0
    RESULTS.mkdir(parents=True, exist_ok=True)
    plot_path = RESULTS / f"{stamp}.png"
    plot_problem = report.plot(results, plot_path)
    if plot_problem:
        say(plot_problem)
    text = report.markdown(
        results, found, facts, header, None if plot_problem else plot_path.name
    )
    markdown_path = RESULTS / f"{stamp}.md"
    markdown_path.write_text(text)
    block = report.latest_block(results, found, facts, header, markdown_path.name)
    report.update_benchmarks_md(REPO / "BENCHMARKS.md", block)
    say(f"wrote {markdown_path.relative_to(REPO)} and BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
