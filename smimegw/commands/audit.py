"""`smimegw audit ...`: the event log kept by the audit service."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from smimegw.client import request
from smimegw.commands import CommandError, add_config, add_json
from smimegw.settings import load_settings


def _summary(event: dict[str, Any]) -> str:
    parts = []
    for key in ("recipients", "reason", "reply", "status", "stage", "next_hop"):
        value = event.get(key)
        if isinstance(value, list):
            parts.append(f"{key}={len(value)}")
        elif value:
            parts.append(f"{key}={value}")
    return " ".join(parts)


def cmd_list(args: argparse.Namespace) -> int:
    query = {
        "type": args.type,
        "queue_id": args.queue_id,
        "since": args.since,
        "limit": args.limit,
    }
    settings = load_settings(args.config)
    reply = asyncio.run(request(settings, "smimegw.audit.query", query))
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


def register(commands: Any) -> None:
    audit = commands.add_parser("audit", help="read the audit log")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    listing = audit_commands.add_parser("list", help="list events, oldest first")
    listing.add_argument("--type", help="event type, e.g. mail.delivered or mail.*")
    listing.add_argument("--queue-id", help="events of one message")
    listing.add_argument(
        "--since", help="ISO 8601 time, or a duration back from now such as 2h"
    )
    listing.add_argument("--limit", type=int, default=1000, help="maximum events")
    add_config(listing)
    add_json(listing)
    listing.set_defaults(func=cmd_list)
