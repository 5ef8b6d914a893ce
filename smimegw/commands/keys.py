"""`smimegw keys rotate-kek`: seal every stored private key under a new KEK.

It runs beside the KEK file, because it needs the old and the new KEK, and
talks to the `keys` bucket directly. No command exports a private key: keys
leave the crypto service only sealed, and only to the bucket.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import nats
import nats.errors

from services.crypto import keystore, keyvault
from smimegw import natsauth
from smimegw.client import connect
from smimegw.commands import CommandError, add_config, plural
from smimegw.settings import Settings, load_settings


def _credentials(settings: Settings) -> dict[str, Any]:
    """This process's NATS user, else the `keys` user that `smimegw run` made."""
    options = natsauth.connect_options(settings)
    password_file = natsauth.keys_tool_password_path(settings)
    if "user" not in options and password_file.is_file():
        options["user"] = natsauth.KEYS_TOOL_USER
        options["password"] = password_file.read_text().strip()
        options["inbox_prefix"] = natsauth.inbox_prefix(natsauth.KEYS_TOOL_USER)
    return options


async def rotate(settings: Settings) -> keystore.Rotation:
    nc = await connect(settings, _credentials(settings))
    try:
        return await keystore.rotate_kek(nc.jetstream(timeout=10), settings.kek_path)
    except (keyvault.KeyVaultError, keystore.RotationError) as err:
        raise CommandError(f"KEK rotation stopped: {err}") from err
    except nats.errors.Error as err:
        raise CommandError(
            f"KEK rotation stopped on a NATS error ({err}); the KEK file is "
            "unchanged, run the command again"
        ) from err
    finally:
        await nc.close()


def cmd_rotate_kek(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    result = asyncio.run(rotate(settings))
    print(
        f"sealed {plural(result.resealed, 'key')} under the new KEK "
        f"{result.new_kek_id} "
        f"({result.unchanged} were already); {settings.kek_path} is the new KEK"
    )
    retired = keyvault.retired_kek_path(settings.kek_path)
    print(
        f"the old KEK {result.old_kek_id} is kept in {retired}: delete it once no "
        "backup of the keys bucket sealed under it is needed"
    )
    return 0


def register(commands: Any) -> None:
    keys = commands.add_parser("keys", help="the private keys sealed at rest")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    rotate_kek = keys_commands.add_parser(
        "rotate-kek",
        help="re-encrypt every stored key under a new key-encryption key",
    )
    add_config(rotate_kek)
    rotate_kek.set_defaults(func=cmd_rotate_kek)
