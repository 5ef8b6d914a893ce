"""`smimegw trace QUEUE_ID`: one message's timeline from the audit log.

Each event is shown with its time, the service that published it, the decision
or outcome it records, and the trace id to look up in the tracing console. A
DSN about the message is part of its timeline: it shares the correlation id.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from dataclasses import asdict, dataclass
from typing import Any

from smimegw.client import request
from smimegw.commands import CommandError, add_config, add_json, plural
from smimegw.settings import load_settings

_QUERY_SUBJECT = "smimegw.audit.query"
_LIMIT = 10_000

# The service that publishes each event type.
_SERVICES = {
    "mail.received": "ingress",
    "mail.routed": "policy",
    "mail.held": "policy",
    "mail.released": "policy",
    "mail.processed": "crypto",
    "mail.unprotected": "crypto",
    "mail.verified": "crypto",
    "mail.decrypted": "crypto",
    "mail.delivered": "delivery",
    "mail.deferred": "delivery",
    "mail.bounced": "delivery",
}


@dataclass(frozen=True)
class Step:
    """One line of the timeline."""

    time: str
    service: str
    type: str
    queue_id: str | None
    decision: str
    outcome: str
    trace_id: str | None
    event_id: str


def _recipients(value: Any) -> str:
    if not isinstance(value, list):
        return "? recipients"
    return plural(len(value), "recipient")


def _attempts(value: Any) -> str:
    return plural(value, "attempt") if isinstance(value, int) else "? attempts"


def _received(event: dict[str, Any]) -> tuple[str, str]:
    client = event.get("client") or {}
    tls = "TLS" if client.get("tls") else "no TLS"
    size = (event.get("body") or {}).get("size", "?")
    return (
        _recipients(event.get("recipients")),
        f"accepted {size} bytes, {tls}",
    )


def _routed(event: dict[str, Any]) -> tuple[str, str]:
    group = f"plan {event.get('group', 0) + 1} of {event.get('groups', 1)}"
    return f"{event.get('action')}: {event.get('reason')}", group


def _processed(event: dict[str, Any]) -> tuple[str, str]:
    operations = [
        f"{op.get('operation')} {op.get('algorithm')}"
        for op in event.get("operations") or []
    ]
    if event.get("bounce_status"):
        return "bounce", f"{event.get('bounce_status')} {event.get('bounce_reason')}"
    kind = "DSN" if event.get("kind") == "dsn" else "message"
    return kind, ", ".join(operations) or "passed through unchanged"


def _outcome(event: dict[str, Any]) -> tuple[str, str]:
    recipients = _recipients(event.get("recipients"))
    kind = event["type"].removeprefix("mail.")
    detail = (
        event.get("reply")
        or event.get("reason")
        or event.get("summary")
        or event.get("status")
        or event.get("outcome")
        or ""
    )
    hop = f" via {event['next_hop']}" if event.get("next_hop") else ""
    return f"{kind} {recipients}{hop}", str(detail)


def _parked(event: dict[str, Any]) -> tuple[str, str]:
    return (
        f"parked after {_attempts(event.get('attempts'))}",
        str(event.get("reason", "")),
    )


def step_of(record: dict[str, Any]) -> Step:
    """Describe one stored audit record as a timeline step."""
    event: dict[str, Any] = json.loads(record["data"])
    event_type = record["type"]
    if event_type == "mail.received":
        decision, outcome = _received(event)
    elif event_type == "mail.routed":
        decision, outcome = _routed(event)
    elif event_type == "mail.processed":
        decision, outcome = _processed(event)
    elif event_type == "mail.parked":
        decision, outcome = _parked(event)
    else:
        decision, outcome = _outcome(event)
    service = _SERVICES.get(event_type) or str(event.get("stage") or "-")
    if event_type == "mail.processed" and event.get("kind") == "dsn":
        service = "delivery"
    return Step(
        time=record["time"],
        service=service,
        type=event_type,
        queue_id=record.get("queue_id"),
        decision=decision,
        outcome=outcome,
        trace_id=record.get("trace_id"),
        event_id=record["event_id"],
    )


def _print_timeline(queue_id: str, steps: list[Step]) -> None:
    trace_ids = sorted({s.trace_id for s in steps if s.trace_id})
    print(f"message {queue_id}")
    print(f"trace   {', '.join(trace_ids) or '(no trace id recorded)'}")
    for step in steps:
        other = f" [{step.queue_id}]" if step.queue_id != queue_id else ""
        print(
            f"{step.time}  {step.service:<8}  {step.type:<16}{other}  "
            f"{step.decision}: {step.outcome}"
        )


def cmd_trace(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    query = {"queue_id": args.queue_id, "records": True, "limit": _LIMIT}
    reply = asyncio.run(request(settings, _QUERY_SUBJECT, query))
    if "error" in reply:
        raise CommandError(reply["error"])
    steps = [step_of(record) for record in reply["records"]]
    if not steps:
        raise CommandError(
            f"no audit events for queue id {args.queue_id!r}; check the id in "
            "the 250 reply or the Received header"
        )
    if args.json:
        print(json.dumps([asdict(step) for step in steps], indent=2))
    else:
        _print_timeline(args.queue_id, steps)
    if reply.get("truncated"):
        print("(truncated: the timeline is too long for one reply)", file=sys.stderr)
    return 0


def register(commands: Any) -> None:
    parser = commands.add_parser(
        "trace", help="show one message's path through the gateway"
    )
    parser.add_argument("queue_id", help="queue id from the 250 reply to DATA")
    add_config(parser)
    add_json(parser)
    parser.set_defaults(func=cmd_trace)
