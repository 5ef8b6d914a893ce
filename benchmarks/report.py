"""Targets, the Markdown report, the PNG plot and the latest run in BENCHMARKS.md."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from benchmarks.measure import HARNESS, SINK, Result

SIGN_ENCRYPT = "gateway: sign and encrypt"
PASS_THROUGH = "gateway: pass-through"
BARE_RELAY = "bare relay"
OPENSSL_FILTER = "OpenSSL filter"
LARGE_PREFIX = "gateway: 30 MB"
LATENCY_SCENARIOS = (SIGN_ENCRYPT, PASS_THROUGH, "gateway: decrypt and verify")

BEGIN = "<!-- latest-run:begin -->"
END = "<!-- latest-run:end -->"


@dataclass(frozen=True)
class Target:
    description: str
    measured: str
    met: bool | None  # None: not measured in this run

    @property
    def verdict(self) -> str:
        return {True: "met", False: "NOT met", None: "not measured"}[self.met]


def _throughput(results: dict[str, Result], name: str) -> float | None:
    result = results.get(name)
    return result.throughput if result is not None and result.ok else None


def _ratio_target(results: dict[str, Result], baseline: str, factor: float) -> Target:
    description = f"sign-and-encrypt throughput >= {factor:g} x {baseline}"
    gateway = _throughput(results, SIGN_ENCRYPT)
    base = _throughput(results, baseline)
    if gateway is None or base is None:
        missing = SIGN_ENCRYPT if gateway is None else baseline
        return Target(description, f"{missing} not measured", None)
    ratio = gateway / base
    # CPU per message shows what the shared machine hides: under contention a
    # gateway of six processes takes more of the 2 cores than a one-process
    # baseline does.
    cpu_gateway = results[SIGN_ENCRYPT].cpu_ms.get("total", 0.0)
    cpu_base = results[baseline].cpu_ms.get("total", 0.0)
    return Target(
        description,
        f"{ratio:.2f} x ({gateway:.1f} / {base:.1f} messages/s); CPU per message "
        f"{cpu_gateway:.1f} / {cpu_base:.1f} ms",
        ratio >= factor,
    )


def targets(results: dict[str, Result], nproc: int) -> list[Target]:
    found = [
        _ratio_target(results, BARE_RELAY, 0.6),
        _ratio_target(results, OPENSSL_FILTER, 5.0),
    ]
    description = (
        f"sign-and-encrypt >= 200 messages/s on a 2-core machine (nproc {nproc})"
    )
    rate = _throughput(results, SIGN_ENCRYPT)
    if rate is None:
        found.append(Target(description, f"{SIGN_ENCRYPT} not measured", None))
    else:
        found.append(Target(description, f"{rate:.1f} messages/s", rate >= 200))
    for name in LATENCY_SCENARIOS:
        result = results.get(name)
        description = f"p99 <= 100 ms at half the maximum throughput ({name})"
        if result is None or not result.ok or "p99" not in result.latency_ms:
            found.append(Target(description, "not measured", None))
            continue
        p99 = result.latency_ms["p99"]
        found.append(
            Target(
                description,
                f"p99 {p99:.1f} ms at {result.half_rate or 0:.1f} messages/s",
                p99 <= 100,
            )
        )
    for name, result in results.items():
        if not name.startswith(LARGE_PREFIX):
            continue
        description = f"peak memory per service <= 3 x message size above idle ({name})"
        if not result.ok:
            found.append(Target(description, "not measured", None))
            continue
        services = {
            k: v for k, v in result.above_idle_mb.items() if k not in (HARNESS, SINK)
        }
        worst = max(services, key=lambda k: services[k])
        limit = 3 * result.message_size / 1e6
        found.append(
            Target(
                description,
                f"largest: {worst} +{services[worst]:.0f} MB (limit {limit:.0f} MB)",
                services[worst] <= limit,
            )
        )
    return found


def _cell(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def summary_table(results: list[Result]) -> list[str]:
    lines = [
        "| scenario | status | messages | size | throughput (msg/s) "
        "| p50 ms | p95 ms | p99 ms | at rate (msg/s) | CPU ms/msg | load |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        status = "ok" if result.ok else result.status
        latency = result.latency_ms
        size = f"{result.message_size / 1e3:.0f} KB" if result.message_size else "-"
        lines.append(
            f"| {result.name} | {status} | {result.messages} | {size} "
            f"| {_cell(result.throughput)} | {_cell(latency.get('p50'))} "
            f"| {_cell(latency.get('p95'))} | {_cell(latency.get('p99'))} "
            f"| {_cell(result.half_rate)} | {_cell(result.cpu_ms.get('total'), 2)} "
            f"| {_cell(result.load)} |"
        )
    return lines


def process_table(results: list[Result]) -> list[str]:
    lines = [
        "### CPU time per message and peak memory, per process",
        "",
        "CPU is user plus system time over the saturation phase (or the single "
        "message), divided by the messages that arrived. Peak is VmHWM after a "
        "reset at the start of the phase; above idle subtracts the RSS at that "
        "start. `total` counts the services and nats-server, not the harness "
        "(load generator) or the sink.",
        "",
        "| scenario | process | CPU ms/msg | peak MB | above idle MB |",
        "|---|---|---:|---:|---:|",
    ]
    for result in results:
        if not result.ok:
            continue
        for name, cpu in result.cpu_ms.items():
            lines.append(
                f"| {result.name} | {name} | {cpu:.2f} "
                f"| {_cell(result.peak_mb.get(name), 0)} "
                f"| {_cell(result.above_idle_mb.get(name), 0)} |"
            )
    return lines


def target_table(found: list[Target]) -> list[str]:
    lines = ["| target | measured | verdict |", "|---|---|---|"]
    lines += [f"| {t.description} | {t.measured} | {t.verdict} |" for t in found]
    return lines


def markdown(
    results: list[Result],
    found: list[Target],
    facts: dict[str, str],
    header: dict[str, str],
    plot_name: str | None,
) -> str:
    lines = [f"# Benchmark run {header['stamp']}", ""]
    lines += [f"- {key}: {value}" for key, value in header.items() if key != "stamp"]
    lines += [
        f"- machine: {facts['nproc']} CPUs ({facts['model']}), {facts['memory']}; "
        f"load average at the end {facts['load']}",
        "",
        "## Results",
        "",
        "Throughput: messages that arrived at the sink during the saturation phase, "
        "divided by the time from the first send to the last arrival. Latency: from "
        "the client's `250` to the DATA of the same message at the sink, measured "
        "while sending at half that throughput. Load: the 1-minute load average "
        "when the measured phase began (2 cores; other engineers' work included).",
        "",
        *summary_table(results),
        "",
        "## Targets",
        "",
        *target_table(found),
        "",
        *process_table(results),
        "",
    ]
    notes = [(r.name, note) for r in results for note in r.notes]
    if notes:
        lines += ["## Notes", ""]
        lines += [f"- {name}: {note}" for name, note in notes]
        lines.append("")
    if plot_name:
        lines += [f"![throughput and latency]({plot_name})", ""]
    return "\n".join(lines)


def plot(results: list[Result], path: Path) -> str | None:
    """Draw throughput and latency bars; the reason when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed, so no plot was drawn"
    measured = [r for r in results if r.ok and r.throughput is not None]
    names = [r.name for r in measured]
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 0.5 * len(names) + 2.5))
    positions = range(len(names))
    colours = ["tab:blue" if r.group == "gateway" else "tab:grey" for r in measured]
    left.barh(positions, [r.throughput or 0 for r in measured], color=colours)
    left.set_yticks(list(positions), names)
    left.invert_yaxis()
    left.set_xscale("log")
    left.set_xlabel("messages per second (log scale)")
    left.set_title("Throughput at saturation")
    height = 0.27
    for offset, key in enumerate(("p50", "p95", "p99")):
        right.barh(
            [p + (offset - 1) * height for p in positions],
            [max(r.latency_ms.get(key, 0.0), 0.01) for r in measured],
            height=height,
            label=key,
        )
    right.set_yticks(list(positions), [""] * len(names))
    right.invert_yaxis()
    right.set_xscale("log")
    right.set_xlabel("ms (log scale)")
    right.set_title("Latency at half the saturation rate")
    right.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return None


def update_benchmarks_md(path: Path, block: str) -> None:
    """Replace the latest-run block of BENCHMARKS.md, keeping the rest of the page."""
    text = path.read_text() if path.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text += f"\n{BEGIN}\n{END}\n"
    head, _, rest = text.partition(BEGIN)
    _, _, tail = rest.partition(END)
    path.write_text(f"{head}{BEGIN}\n{block}\n{END}{tail}")


def latest_block(
    results: list[Result],
    found: list[Target],
    facts: dict[str, str],
    header: dict[str, str],
    markdown_name: str,
) -> str:
    """Build the part of BENCHMARKS.md that each run rewrites."""
    stem = markdown_name.removesuffix(".md")
    lines = [
        f"Run {header['stamp']} at commit {header['commit']}, "
        f"with {header['command']}.",
        f"Machine: {facts['nproc']} CPUs ({facts['model']}), {facts['memory']}, "
        f"load average at the end {facts['load']}. Bounds: {header['bounds']}.",
        f"Full report: [results/{markdown_name}](benchmarks/results/{markdown_name}), "
        f"plot: [results/{stem}.png](benchmarks/results/{stem}.png).",
        "",
        *summary_table(results),
        "",
        *target_table(found),
    ]
    return "\n".join(lines)
