"""`smimegw parked list|retry|drop`: messages a service gave up on.

The commands read and change the PARKED stream through NATS directly (see
smimegw/parking.py), so they need the broker but no running service.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import nats
import nats.errors
from nats.js import JetStreamContext

from smimegw import parking
from smimegw.client import connect
from smimegw.commands import CommandError, add_config, add_json, format_table
from smimegw.service import nats_url
from smimegw.settings import Settings, load_settings

_Action = Callable[[JetStreamContext, int], Awaitable[parking.ParkedMessage]]


async def _with_jetstream(
    settings: Settings, work: Callable[[JetStreamContext], Awaitable[Any]]
) -> Any:
    url = nats_url(settings)
    nc = await connect(settings)
    try:
        return await work(nc.jetstream(timeout=10))
    except parking.ParkingError as err:
        raise CommandError(str(err)) from err
    except nats.errors.Error as err:
        raise CommandError(f"reading the PARKED stream at {url} failed: {err}") from err
    finally:
        await nc.close()


def _row(message: parking.ParkedMessage) -> dict[str, object]:
    when = (
        message.parked_at.strftime("%Y-%m-%dT%H:%M:%SZ") if message.parked_at else None
    )
    return {
        "sequence": message.sequence,
        "parked_at": when,
        "stage": message.stage,
        "queue_id": message.queue_id,
        "subject": message.subject,
        "reason": message.reason,
    }


def cmd_list(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)

    async def work(js: JetStreamContext) -> list[parking.ParkedMessage]:
        return await parking.list_parked(js, stage=args.stage, limit=args.limit)

    found: list[parking.ParkedMessage] = asyncio.run(_with_jetstream(settings, work))
    if args.json:
        print(json.dumps([m.as_dict() for m in found], indent=2))
    elif not found:
        print("no parked messages")
    else:
        columns = ["sequence", "parked_at", "stage", "queue_id", "subject", "reason"]
        print(format_table([_row(m) for m in found], columns))
    return 0


def _each(args: argparse.Namespace, action: _Action, verb: str) -> int:
    settings = load_settings(args.config)

    async def work(js: JetStreamContext) -> list[parking.ParkedMessage]:
        sequences = list(args.sequence)
        if args.all:
            listed = await parking.list_parked(js, stage=args.stage, limit=args.limit)
            sequences += [m.sequence for m in listed]
        if not sequences:
            raise CommandError(f"name the parked messages to {verb}, or pass --all")
        return [await action(js, sequence) for sequence in sequences]

    done: list[parking.ParkedMessage] = asyncio.run(_with_jetstream(settings, work))
    if args.json:
        print(json.dumps([m.as_dict() for m in done], indent=2))
    else:
        for message in done:
            note = ""
            if verb == "drop" and message.body_key:
                note = f" (body {message.body_key} stays in the BODIES stream)"
            print(f"{verb}: {message.sequence} {message.subject or '-'}{note}")
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    return _each(args, parking.retry, "retry")


def cmd_drop(args: argparse.Namespace) -> int:
    return _each(args, parking.drop, "drop")


def _selection(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stage", help="only this stage, e.g. policy or delivery")
    parser.add_argument("--limit", type=int, default=1000, help="maximum messages")
    add_config(parser)
    add_json(parser)


def register(commands: Any) -> None:
    parked = commands.add_parser(
        "parked", help="messages a service gave up on (the PARKED stream)"
    )
    parked_commands = parked.add_subparsers(dest="parked_command", required=True)

    listing = parked_commands.add_parser("list", help="list parked messages")
    _selection(listing)
    listing.set_defaults(func=cmd_list)

    for verb, func, text in (
        ("retry", cmd_retry, "send parked messages back to their stage"),
        ("drop", cmd_drop, "delete parked messages for good"),
    ):
        sub = parked_commands.add_parser(verb, help=text)
        sub.add_argument(
            "sequence", type=int, nargs="*", help="sequence numbers from `list`"
        )
        sub.add_argument(
            "--all", action="store_true", help="every listed message (see --stage)"
        )
        _selection(sub)
        sub.set_defaults(func=func)
