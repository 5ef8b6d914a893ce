"""Subcommands of `smimegw`, one module per group; each adds its parsers in `register`.

A parser sets `func` to a callable that takes the parsed arguments and returns the
exit status. The helpers below lay out tables and records the same way for every
group; `--json` output bypasses them.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


class CommandError(Exception):
    """A failure to report as one line on stderr with a non-zero exit status."""


def add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        help="TOML configuration file (default: $SMIMEGW_CONFIG, else defaults)",
    )


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON")


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """Return `count` with `noun` in the singular or the plural: "1 recipient"."""
    if count == 1:
        return f"{count} {noun}"
    return f"{count} {plural_form or noun + 's'}"


def plain(value: Any) -> str:
    """Render a JSON value for a person: "-" for none, "yes"/"no", lists joined."""
    if value is None or value == "":
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(plain(item) for item in value) or "-"
    if isinstance(value, dict):
        return ", ".join(f"{key}={plain(item)}" for key, item in value.items()) or "-"
    return str(value)


def column_title(key: str) -> str:
    return key.replace("_", " ").upper()


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Lay out `rows` under a header row, each column as wide as its widest cell.

    The last column is not padded, so free text there makes no trailing blanks.
    """
    table = [[column_title(c) for c in columns]]
    table += [[plain(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    lines = []
    for line in table:
        cells = [cell.ljust(width) for cell, width in zip(line, widths, strict=True)]
        cells[-1] = line[-1]
        lines.append("  ".join(cells))
    return "\n".join(lines)


def format_record(record: Mapping[str, Any]) -> str:
    """Lay out one record as `label: value` lines with the values aligned.

    A list of phrases (items containing blanks, such as warnings) gets one item
    per line, because commas inside the items would make a joined list ambiguous.
    """
    labels = {key: key.replace("_", " ") + ":" for key in record}
    width = max((len(label) for label in labels.values()), default=0)
    lines = []
    for key, value in record.items():
        label = labels[key].ljust(width)
        is_phrases = isinstance(value, list) and any(
            isinstance(item, str) and " " in item for item in value
        )
        if not is_phrases:
            lines.append(f"{label} {plain(value)}")
            continue
        items = [plain(item) for item in value]
        lines.append(f"{label} {items[0]}")
        lines += [f"{'':<{width}} {item}" for item in items[1:]]
    return "\n".join(lines)
