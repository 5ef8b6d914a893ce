"""The `smimegw` command line."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from pydantic import ValidationError

from smimegw.client import GatewayUnreachableError
from smimegw.commands import CommandError
from smimegw.embedded import EmbeddedServerError
from smimegw.settings import ConfigFileError

# Modules under smimegw.commands, in the order their commands appear in --help.
COMMAND_MODULES = (
    "gateway",
    "certificates",
    "rules",
    "audit",
    "trace",
    "parked",
    "held",
    "admin",
    "keys",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="smimegw", description="S/MIME email gateway on NATS JetStream."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"smimegw.commands.{name}").register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # nats-py logs each failed connection attempt with a traceback; a command
    # reports the failure itself in one line. `run` and `serve` set up their
    # own logging.
    logging.getLogger("nats").setLevel(logging.CRITICAL)
    try:
        status: int = args.func(args)
    except (
        CommandError,
        ConfigFileError,
        GatewayUnreachableError,
        EmbeddedServerError,
    ) as err:
        print(f"smimegw: {err}", file=sys.stderr)
        return 1
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(map(str, error['loc'])) or 'settings'}: {error['msg']}"
            for error in err.errors()
        )
        print(f"smimegw: invalid configuration: {problems}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return status
