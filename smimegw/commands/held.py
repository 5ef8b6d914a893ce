"""`smimegw held list|release|drop`: copies held for a missing certificate.

A profile with `--on-failure hold` keeps a recipient's copy in the policy
service until a usable certificate is imported or the hold times out. These
commands let an operator see those copies, plan one again now, or bounce it.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from schemas.commands import POLICY_COMMANDS, HeldDrop, HeldList, HeldRelease
from smimegw.commands import add_config, add_json, format_table
from smimegw.commands.certificates import send

_COLUMNS = ["queue_id", "recipient", "sender", "since", "waits_for", "timeout"]


def cmd_list(args: argparse.Namespace) -> int:
    copies = send(args, POLICY_COMMANDS, HeldList(command="held.list")).result
    if args.json:
        print(json.dumps(copies, indent=2))
    elif not copies:
        print("no held copies")
    else:
        print(format_table(copies, _COLUMNS))
    return 0


def _describe(result: dict[str, Any]) -> str:
    copy = f"{result['queue_id']} for {result['recipient']}"
    outcome = result["outcome"]
    if outcome == "certificate-imported":
        return f"released {copy}: a usable certificate exists now, so it goes out"
    if outcome == "timed-out":
        return f"bounced {copy}: its hold timed out at {result['timeout']}"
    if outcome == "dropped":
        return f"dropped {copy}: the sender gets a bounce"
    if outcome == "released-meanwhile":
        return (
            f"{copy} was released or dropped meanwhile, by another request or "
            f"replica; `smimegw trace {result['queue_id']}` shows what happened"
        )
    waits_for = result["waits_for"]
    fix = (
        f"import a certificate for {waits_for}"
        if waits_for
        else "no certificate can release it"
    )
    return (
        f"{copy} stays held ({result['reason']}): {fix}, or bounce it with "
        "`smimegw held drop`"
    )


def cmd_release(args: argparse.Namespace) -> int:
    command = HeldRelease(
        command="held.release", queue_id=args.queue_id, recipient=args.recipient
    )
    return _run(args, command, success=("certificate-imported", "timed-out"))


def cmd_drop(args: argparse.Namespace) -> int:
    command = HeldDrop(
        command="held.drop", queue_id=args.queue_id, recipient=args.recipient
    )
    return _run(args, command, success=("dropped",))


def _run(
    args: argparse.Namespace,
    command: HeldRelease | HeldDrop,
    success: tuple[str, ...],
) -> int:
    """Send `command`, print each copy's outcome, and exit 1 unless all succeeded."""
    results = send(args, POLICY_COMMANDS, command).result
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print("\n".join(_describe(result) for result in results))
    return 0 if all(result["outcome"] in success for result in results) else 1


def register(commands: Any) -> None:
    held = commands.add_parser(
        "held", help="copies held until a recipient's certificate arrives"
    )
    held_commands = held.add_subparsers(dest="held_command", required=True)

    listing = held_commands.add_parser("list", help="list held copies, oldest first")
    add_config(listing)
    add_json(listing)
    listing.set_defaults(func=cmd_list)

    for verb, func, text in (
        (
            "release",
            cmd_release,
            "plan a message's held copies again now: a copy whose certificate "
            "has arrived goes out, the others stay held (exit status 1)",
        ),
        (
            "drop",
            cmd_drop,
            "stop holding a message's copies and bounce them to the sender with "
            "a DSN (reason: dropped by operator)",
        ),
    ):
        sub = held_commands.add_parser(verb, help=text)
        sub.add_argument("queue_id", help="queue id from `smimegw held list`")
        sub.add_argument("--recipient", help="only the copy for this recipient")
        add_config(sub)
        add_json(sub)
        sub.set_defaults(func=func)
