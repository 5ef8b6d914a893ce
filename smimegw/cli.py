"""The `smimegw` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from smimegw.client import GatewayUnreachableError, request
from smimegw.embedded import EmbeddedServerError
from smimegw.logs import configure_logging
from smimegw.service import SERVICE_NAMES
from smimegw.settings import ConfigFileError, Settings, load_settings


class CommandError(Exception):
    """A failure to report as one line on stderr with a non-zero exit status."""


def _add_config(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        type=Path,
        help="TOML configuration file (default: $SMIMEGW_CONFIG, else defaults)",
    )


def _add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smimegw", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser(
        "run",
        help="run the embedded nats-server (unless nats.url is set) and all services",
    )
    _add_config(run)

    serve = commands.add_parser("serve", help="run one service against nats.url")
    serve.add_argument("service", choices=SERVICE_NAMES)
    _add_config(serve)

    asyncapi = commands.add_parser("asyncapi", help="write the AsyncAPI document")
    asyncapi.add_argument("--output", type=Path, help="file to write (default: stdout)")
    _add_config(asyncapi)

    audit = commands.add_parser("audit", help="read the audit log")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    audit_list = audit_commands.add_parser("list", help="list events, oldest first")
    audit_list.add_argument("--type", help="event type, e.g. mail.delivered or mail.*")
    audit_list.add_argument("--queue-id", help="events of one message")
    audit_list.add_argument(
        "--since", help="ISO 8601 time, or a duration back from now such as 2h"
    )
    audit_list.add_argument("--limit", type=int, default=1000, help="maximum events")
    _add_config(audit_list)
    _add_json(audit_list)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config)


def _summary(event: dict[str, Any]) -> str:
    parts = []
    for key in ("recipients", "reason", "reply", "status", "stage", "next_hop"):
        value = event.get(key)
        if isinstance(value, list):
            parts.append(f"{key}={len(value)}")
        elif value:
            parts.append(f"{key}={value}")
    return " ".join(parts)


def cmd_audit_list(args: argparse.Namespace) -> int:
    query = {
        "type": args.type,
        "queue_id": args.queue_id,
        "since": args.since,
        "limit": args.limit,
    }
    reply = asyncio.run(request(_settings(args), "smimegw.audit.query", query))
    if "error" in reply:
        raise CommandError(reply["error"])
    events = reply["events"]
    if args.json:
        print(json.dumps(events, indent=2))
    else:
        for event in events:
            print(
                f"{event['time']}  {event['type']:<15} "
                f"{event.get('queue_id') or '-':<18}  {_summary(event)}"
            )
    if reply.get("truncated"):
        print("(truncated: narrow the query or lower --limit)", file=sys.stderr)
    return 0


def dispatch(args: argparse.Namespace) -> int:
    if args.command == "run":
        from smimegw.supervisor import run

        configure_logging("run")
        return run(_settings(args), args.config)
    if args.command == "serve":
        from smimegw.service import run_until_signal

        configure_logging(args.service)
        run_until_signal(args.service, _settings(args))
        return 0
    if args.command == "asyncapi":
        from smimegw.asyncapi import document

        text = document(_settings(args))
        if args.output:
            args.output.write_text(text + "\n")
        else:
            print(text)
        return 0
    if args.command == "audit":
        return cmd_audit_list(args)
    raise CommandError(f"unknown command {args.command!r}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return dispatch(args)
    except (
        CommandError,
        ConfigFileError,
        GatewayUnreachableError,
        EmbeddedServerError,
    ) as err:
        print(f"smimegw: {err}", file=sys.stderr)
        return 1
    except ValidationError as err:
        print(f"smimegw: invalid configuration: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
