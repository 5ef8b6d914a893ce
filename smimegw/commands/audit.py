"""`smimegw audit ...`: the event log kept by the audit service.

`list` queries the running audit service over NATS. `verify` and `export` open
the audit store itself (the SQLite file under data_dir, or the PostgreSQL
database at audit.database_url), so they work while the gateway is stopped and
check what is stored, not what a service reports.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict
from typing import Any

from services.audit.chain import VerifyResult
from services.audit.handlers import parse_since
from services.audit.store import AuditStore, AuditStoreError, open_store
from smimegw.client import request
from smimegw.commands import CommandError, add_config, add_json, format_table, plural
from smimegw.settings import Settings, load_settings


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
        rows = [{**event, "summary": _summary(event)} for event in events]
        print(format_table(rows, ["time", "type", "queue_id", "summary"]))
    if reply.get("truncated"):
        print(
            "(older events left out: narrow the query or raise --limit)",
            file=sys.stderr,
        )
    return 0


def _open(settings: Settings) -> AuditStore:
    if not settings.audit.database_url.get_secret_value():
        path = settings.data_dir / "audit.sqlite3"
        if not path.is_file():
            raise CommandError(
                f"no audit store at {str(path)!r}; run this where the audit "
                "service keeps its data_dir, or pass its --config"
            )
    try:
        return open_store(settings)
    except AuditStoreError as err:
        raise CommandError(str(err)) from err


def _verify_lines(result: VerifyResult) -> list[str]:
    if result.ok:
        return [
            f"audit log intact: {plural(result.records, 'record')}",
            f"head hash {result.head_hash} (keep it elsewhere to detect records "
            "deleted from the end later)",
        ]
    event = f" (event {result.event_id})" if result.event_id else ""
    return [
        f"audit log verification FAILED at record {result.record_id}{event}",
        result.reason,
        f"{plural(result.records, 'record')} before it "
        f"{'is' if result.records == 1 else 'are'} intact",
    ]


def cmd_verify(args: argparse.Namespace) -> int:
    store = _open(load_settings(args.config))
    try:
        result = store.verify()
    except AuditStoreError as err:
        raise CommandError(str(err)) from err
    finally:
        store.close()
    if args.json:
        print(json.dumps(asdict(result), indent=2))
    else:
        print("\n".join(_verify_lines(result)))
    return 0 if result.ok else 1


def cmd_export(args: argparse.Namespace) -> int:
    try:
        since = parse_since(args.since) if args.since else None
    except ValueError as err:
        raise CommandError(f"invalid --since {args.since!r}: {err}") from err
    store = _open(load_settings(args.config))
    out = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
    count = 0
    try:
        for record in store.records(since):
            out.write(json.dumps(record.as_dict(), sort_keys=True) + "\n")
            count += 1
    except AuditStoreError as err:
        raise CommandError(str(err)) from err
    finally:
        store.close()
        if out is not sys.stdout:
            out.close()
    print(f"exported {plural(count, 'record')}", file=sys.stderr)
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
    listing.add_argument(
        "--limit",
        type=int,
        default=1000,
        help="show at most this many events, the newest (default 1000)",
    )
    add_config(listing)
    add_json(listing)
    listing.set_defaults(func=cmd_list)

    verify = audit_commands.add_parser(
        "verify",
        help="recompute the hash chain of the audit store; exit 1 at the first "
        "record that does not match",
    )
    add_config(verify)
    add_json(verify)
    verify.set_defaults(func=cmd_verify)

    export = audit_commands.add_parser(
        "export",
        help="write stored records with their hashes, oldest first, for archiving",
    )
    export.add_argument(
        "--since",
        help="records of events at or after this ISO 8601 time, or a duration "
        "back from now such as 30d (default: all)",
    )
    export.add_argument(
        "--format",
        choices=("jsonl",),
        default="jsonl",
        help="jsonl: one JSON object per line, the stored fields (default)",
    )
    export.add_argument("--output", help="file to write (default: standard output)")
    add_config(export)
    export.set_defaults(func=cmd_export)
