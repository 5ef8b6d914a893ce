"""`smimegw admin ...`: the admin API, its tokens, and NATS users for deployments."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from services.admin.tokens import Role, TokenStoreError, token_store
from smimegw import natsauth
from smimegw.commands import CommandError, add_config, add_json, format_table
from smimegw.settings import load_settings


def cmd_token_create(args: argparse.Namespace) -> int:
    store = token_store(load_settings(args.config))
    try:
        entry, token = store.create(Role(args.role), args.name or "")
    except (TokenStoreError, OSError) as err:
        raise CommandError(f"cannot create a token: {err}") from err
    # The only time the token is shown: the file keeps its SHA-256 only.
    print(token)
    print(
        f"created {entry.role} token {entry.token_id} in {store.path}; "
        "store it now, it cannot be shown again",
        file=sys.stderr,
    )
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    store = token_store(load_settings(args.config))
    try:
        entries = [entry.public() for entry in store.entries()]
    except TokenStoreError as err:
        raise CommandError(str(err)) from err
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    print(format_table(entries, ["id", "role", "created", "name"]))
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    store = token_store(load_settings(args.config))
    try:
        removed = store.revoke(args.id)
    except (TokenStoreError, OSError) as err:
        raise CommandError(f"cannot revoke token {args.id}: {err}") from err
    if not removed:
        raise CommandError(
            f"no token has id {args.id}; list them with `smimegw admin token list`"
        )
    print(f"revoked token {args.id}")
    return 0


def cmd_nats_users(args: argparse.Namespace) -> int:
    """Write the NATS users for a deployment: the server's part and each service's."""
    settings = load_settings(args.config)
    passwords = natsauth.new_passwords()
    output: Path = args.output
    try:
        natsauth.write_server_config(
            output / "nats-auth.json", natsauth.server_config(passwords, settings)
        )
        for user, password in passwords.items():
            natsauth.write_secret(
                output / f"{user}.env",
                f"SMIMEGW_NATS__USER={user}\nSMIMEGW_NATS__PASSWORD={password}\n",
            )
    except OSError as err:
        raise CommandError(f"cannot write to {output}: {err.strerror}") from err
    print(
        f"wrote {output / 'nats-auth.json'} for nats-server (include it in its "
        f"configuration) and one .env file per user in {output}, all mode 0600"
    )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from smimegw.logs import configure_logging
    from smimegw.service import run_until_signal

    configure_logging("admin")
    run_until_signal("admin", load_settings(args.config))
    return 0


def register(commands: Any) -> None:
    admin = commands.add_parser("admin", help="the admin API and its tokens")
    admin_commands = admin.add_subparsers(dest="admin_command", required=True)

    serve = admin_commands.add_parser(
        "serve", help="run the admin API on admin.listen against nats.url"
    )
    add_config(serve)
    serve.set_defaults(func=cmd_serve)

    nats_users = admin_commands.add_parser(
        "nats-users",
        help="write per-service NATS users and permissions for a deployment",
    )
    nats_users.add_argument(
        "--output", type=Path, required=True, help="folder for the files"
    )
    add_config(nats_users)
    nats_users.set_defaults(func=cmd_nats_users)

    token = admin_commands.add_parser("token", help="bearer tokens of the admin API")
    tokens = token.add_subparsers(dest="token_command", required=True)
    create = tokens.add_parser("create", help="create a token and print it once")
    create.add_argument(
        "--role",
        required=True,
        choices=[str(role) for role in Role],
        help="read: configuration and logs; read-write: changes as well",
    )
    create.add_argument("--name", help="a note on who or what uses the token")
    add_config(create)
    create.set_defaults(func=cmd_token_create)
    listing = tokens.add_parser("list", help="list tokens (ids and roles, no secrets)")
    add_config(listing)
    add_json(listing)
    listing.set_defaults(func=cmd_token_list)
    revoke = tokens.add_parser("revoke", help="delete a token by its id")
    revoke.add_argument("id")
    add_config(revoke)
    revoke.set_defaults(func=cmd_token_revoke)
