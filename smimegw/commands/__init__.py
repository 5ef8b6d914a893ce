"""Subcommands of `smimegw`, one module per group; each adds its parsers in `register`.

A parser sets `func` to a callable that takes the parsed arguments and returns the
exit status.
"""

from __future__ import annotations

import argparse
from pathlib import Path


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
