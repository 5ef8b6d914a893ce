"""`smimegw profile ...` and `smimegw rule ...`: what outgoing mail gets."""

from __future__ import annotations

import argparse
from typing import Any

from schemas.commands import (
    POLICY_COMMANDS,
    ProfileCreate,
    ProfileDelete,
    Query,
    RuleCreate,
    RuleDelete,
    RuleMove,
)
from services.crypto.cms.envelope import CONTENT_ALGORITHMS
from smimegw.commands import add_config, add_json
from smimegw.commands.certificates import send, show


def cmd_profile_create(args: argparse.Namespace) -> int:
    command = ProfileCreate(
        command="profile.create",
        name=args.name,
        action=args.action,
        algorithm=args.algorithm,
        digest=args.digest,
        signature=args.signature,
        on_failure=args.on_failure,
        encrypt_to_self=args.encrypt_to_self,
        hold_timeout=args.hold_timeout,
        rsa_padding=args.rsa_padding,
    )
    send(args, POLICY_COMMANDS, command)
    print(f"created profile {args.name}")
    return 0


def cmd_profile_delete(args: argparse.Namespace) -> int:
    send(args, POLICY_COMMANDS, ProfileDelete(command="profile.delete", name=args.name))
    print(f"deleted profile {args.name}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    columns = {
        "profile.list": [
            "name",
            "action",
            "algorithm",
            "digest",
            "on_failure",
            "in_use",
        ],
        "rule.list": ["position", "id", "profile", "sender", "recipient", "client_ip"],
    }[args.query]
    reply = send(args, POLICY_COMMANDS, Query(command=args.query))
    return show(args, reply.result, columns)


def cmd_rule_create(args: argparse.Namespace) -> int:
    command = RuleCreate(
        command="rule.create",
        profile=args.profile,
        sender=args.sender,
        recipient=args.recipient,
        client_ip=args.client_ip,
        position=args.position,
    )
    rule_id = send(args, POLICY_COMMANDS, command).result["id"]
    print(f"created rule {rule_id} {_placement(args, rule_id, 'at')}")
    return 0


def cmd_rule_move(args: argparse.Namespace) -> int:
    command = RuleMove(command="rule.move", rule_id=args.id, position=args.position)
    send(args, POLICY_COMMANDS, command)
    print(f"moved rule {args.id} {_placement(args, args.id, 'to')}")
    return 0


def _placement(args: argparse.Namespace, rule_id: str, preposition: str) -> str:
    """Describe the place the rule took, as the policy service now lists it.

    A position past the end puts the rule last, as `rule create` without
    --position does, so the reply names the place it took, not the one requested.
    """
    rules = send(args, POLICY_COMMANDS, Query(command="rule.list")).result
    position = next((r["position"] for r in rules if r["id"] == rule_id), None)
    if position is None:
        return "but another change deleted it since"
    where = f"{preposition} position {position} of {len(rules)}"
    if args.position is not None and args.position > len(rules):
        where += f" (position {args.position} is past the end, so it went last)"
    return where


def cmd_rule_delete(args: argparse.Namespace) -> int:
    send(args, POLICY_COMMANDS, RuleDelete(command="rule.delete", rule_id=args.id))
    print(f"deleted rule {args.id}")
    return 0


def _list(group: Any, query: str, help_text: str) -> None:
    parser = group.add_parser("list", help=help_text)
    add_config(parser)
    add_json(parser)
    parser.set_defaults(func=cmd_list, query=query)


def register(commands: Any) -> None:
    profiles = commands.add_parser("profile", help="encryption profiles")
    profile = profiles.add_subparsers(dest="profile_command", required=True)
    create = profile.add_parser("create", help="create an encryption profile")
    create.add_argument("name")
    create.add_argument(
        "--action", required=True, choices=("encrypt", "sign", "sign-and-encrypt")
    )
    create.add_argument(
        "--algorithm",
        default="aes256-cbc",
        choices=CONTENT_ALGORITHMS,
        help="content encryption (3des-cbc is reported as weak)",
    )
    create.add_argument(
        "--digest", default="sha256", choices=("sha256", "sha384", "sha512")
    )
    create.add_argument(
        "--signature",
        default="detached",
        choices=("detached", "opaque"),
        help="detached: multipart/signed; opaque: signed-data",
    )
    create.add_argument(
        "--on-failure",
        default="bounce",
        choices=("send-plain", "bounce", "hold"),
        help="what a recipient without a usable certificate gets",
    )
    create.add_argument(
        "--encrypt-to-self",
        action="store_true",
        help="also encrypt to the sender's own certificate",
    )
    create.add_argument(
        "--rsa-padding",
        default="pkcs1v15",
        choices=("pkcs1v15", "pss"),
        help="signature scheme for RSA signer keys: PKCS#1 v1.5 or RSA-PSS "
        "(RFC 4056); EC keys sign with ECDSA either way",
    )
    create.add_argument(
        "--hold-timeout",
        help="how long a held copy waits before it bounces, e.g. 3d (default: "
        "policy.hold_timeout)",
    )
    add_config(create)
    create.set_defaults(func=cmd_profile_create)
    _list(profile, "profile.list", "list encryption profiles")
    delete = profile.add_parser("delete", help="delete a profile no rule uses")
    delete.add_argument("name")
    add_config(delete)
    delete.set_defaults(func=cmd_profile_delete)

    rules = commands.add_parser("rule", help="delivery rules, checked top down")
    rule = rules.add_subparsers(dest="rule_command", required=True)
    create = rule.add_parser("create", help="add a delivery rule")
    create.add_argument("--profile", required=True, help="encryption profile to apply")
    pattern_help = "address, @domain, * wildcards, or re:REGEX (default: any)"
    create.add_argument("--sender", help=f"envelope sender: {pattern_help}")
    create.add_argument("--recipient", help=f"recipient: {pattern_help}")
    create.add_argument("--client-ip", help="client address or CIDR network")
    create.add_argument(
        "--position",
        type=int,
        help="1-based place in the list; past the end or unset: last",
    )
    add_config(create)
    create.set_defaults(func=cmd_rule_create)
    _list(rule, "rule.list", "list delivery rules in the order they are checked")
    move = rule.add_parser("move", help="move a rule to another position")
    move.add_argument("id")
    move.add_argument(
        "--position",
        type=int,
        required=True,
        help="1-based place in the list; past the end: last",
    )
    add_config(move)
    move.set_defaults(func=cmd_rule_move)
    delete = rule.add_parser("delete", help="delete a rule")
    delete.add_argument("id")
    add_config(delete)
    delete.set_defaults(func=cmd_rule_delete)
