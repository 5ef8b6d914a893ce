"""NATS users and permissions: each service may use only the subjects it needs.

`server_config` writes a nats-server configuration (JSON, which nats-server
reads as its config format) with one user per service and allow lists for
publish and subscribe. Each user has its own inbox prefix (`_INBOX_<user>`),
so no service can subscribe to the replies another one receives, such as the
sealed keys that crypto reads from the `keys` bucket. Only crypto may touch the
`keys` bucket (`$KV.keys.>` and the `KV_keys` stream API); only ingress may
publish `mail.received`.

Connections without credentials are the command line's (`smimegw.client`
sends none yet): they get the `cli` user, which may send commands and manage
parked messages but reads no key and publishes no mail event except a parked
message's retry.
"""

from __future__ import annotations

import json
import os
import secrets
import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from faststream.nats.security import NatsSecurity, NatsUserPassword

from schemas.commands import CRYPTO_COMMANDS, POLICY_COMMANDS
from smimegw import streams
from smimegw.settings import Settings

SERVICE_USERS = ("ingress", "policy", "crypto", "delivery", "audit", "admin")
# `smimegw keys rotate-kek`, run beside the KEK file, reseals the keys bucket.
KEYS_TOOL_USER = "keys"
CLI_USER = "cli"
AUDIT_QUERY = "smimegw.audit.query"

_SHARED_STREAMS = (streams.MAIL, streams.CONFIG, streams.BODIES, streams.PARKED)
_KV_STREAMS = tuple(
    f"KV_{bucket}"
    for bucket in (
        streams.DELIVERY_BUCKET,
        streams.KEYS_BUCKET,
        streams.HELD_BUCKET,
        streams.PARTNERS_BUCKET,
    )
)

# Mail events each service publishes, besides mail.parked, which any may.
_MAIL_EVENTS: Mapping[str, tuple[str, ...]] = {
    "ingress": ("mail.received",),
    "policy": ("mail.routed", "mail.held", "mail.released", "mail.unprotected"),
    "crypto": ("mail.processed", "mail.verified", "mail.decrypted"),
    "delivery": ("mail.delivered", "mail.deferred", "mail.bounced", "mail.processed"),
    "audit": (),
    "admin": (),
    KEYS_TOOL_USER: (),
}


class NatsAuthError(ValueError):
    """A credentials or TLS setting that cannot be used."""


def inbox_prefix(user: str) -> str:
    return f"_INBOX_{user}"


def inbox_of(settings: Settings) -> str:
    """Return the inbox prefix of this process: its user's own, or NATS's default."""
    return inbox_prefix(settings.nats.user) if settings.nats.user else "_INBOX"


def _stream_api(action: str, names: tuple[str, ...]) -> list[str]:
    return [f"$JS.API.STREAM.{action}.{name}" for name in names]


def _consumer_api(stream: str, durable: str) -> list[str]:
    """Create, look up and pull from one durable consumer, and ack its messages."""
    return [
        f"$JS.API.CONSUMER.CREATE.{stream}.{durable}",
        f"$JS.API.CONSUMER.CREATE.{stream}.{durable}.>",
        f"$JS.API.CONSUMER.DURABLE.CREATE.{stream}.{durable}",
        f"$JS.API.CONSUMER.INFO.{stream}.{durable}",
        f"$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}",
        f"$JS.ACK.{stream}.{durable}.>",
    ]


def _config_follower() -> list[str]:
    """List the subjects of the ordered consumer that replays CONFIG."""
    return [
        f"$JS.API.CONSUMER.CREATE.{streams.CONFIG}",
        f"$JS.API.CONSUMER.CREATE.{streams.CONFIG}.>",
        f"$JS.API.CONSUMER.DELETE.{streams.CONFIG}.>",
        f"$JS.API.STREAM.MSG.GET.{streams.CONFIG}",
        f"$JS.FC.{streams.CONFIG}.>",
    ]


def _common(user: str) -> list[str]:
    """List what every service publishes: provisioning, stream lookups, parking."""
    # Ingress and admin consume nothing, so they never park a message.
    parking = [] if user in ("ingress", "admin") else ["mail.parked", f"parked.{user}"]
    return [
        "$JS.API.INFO",
        "$JS.API.STREAM.NAMES",
        # Every service provisions streams and buckets at start, whichever
        # starts first; creating the keys bucket grants no access to its data.
        *_stream_api("CREATE", _SHARED_STREAMS + _KV_STREAMS),
        # NOTE: a user that may create or update a stream could make it capture
        # subjects it may not read, such as smimegw.cmd.crypto with passwords.
        # Creation is limited to the gateway's own names, which exist after the
        # first start; update stays allowed so that a changed setting applies.
        *_stream_api("UPDATE", _SHARED_STREAMS),
        *_stream_api("INFO", _SHARED_STREAMS + _KV_STREAMS),
        *parking,
    ]


def _kv(bucket: str) -> list[str]:
    stream = f"KV_{bucket}"
    return [
        f"$KV.{bucket}.>",
        # Listing keys and watching use an ordered consumer on the bucket.
        f"$JS.API.CONSUMER.CREATE.{stream}",
        f"$JS.API.CONSUMER.CREATE.{stream}.>",
        f"$JS.API.CONSUMER.DELETE.{stream}.>",
        f"$JS.API.CONSUMER.INFO.{stream}.>",
        f"$JS.FC.{stream}.>",
        f"$JS.API.STREAM.MSG.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}",
        f"$JS.API.DIRECT.GET.{stream}.>",
    ]


def _body_reader() -> list[str]:
    return [
        f"$JS.API.DIRECT.GET.{streams.BODIES}",
        f"$JS.API.DIRECT.GET.{streams.BODIES}.>",
        f"$JS.API.STREAM.MSG.GET.{streams.BODIES}",
    ]


def _publish_allow(user: str) -> list[str]:
    allow = _common(user) + list(_MAIL_EVENTS[user])
    if user == "ingress":
        allow += ["body.>"]
    elif user == "policy":
        allow += ["config.>", *_config_follower(), *_consumer_api("MAIL", user)]
        allow += _kv(streams.HELD_BUCKET) + _body_reader()
        # The consumer that records partner capabilities from mail.verified.
        allow += _consumer_api("MAIL", "policy_capabilities")
        allow += ["parked.policy_capabilities", *_kv(streams.PARTNERS_BUCKET)]
    elif user == "crypto":
        allow += ["config.>", *_config_follower(), *_consumer_api("MAIL", user)]
        allow += ["body.>", *_body_reader(), *_kv(streams.KEYS_BUCKET)]
    elif user == "delivery":
        allow += _consumer_api("MAIL", user) + _body_reader()
        allow += ["body.>", f"$JS.API.STREAM.PURGE.{streams.BODIES}"]
        allow += _kv(streams.DELIVERY_BUCKET)
    elif user == "audit":
        allow += _consumer_api(streams.MAIL, "audit_mail")
        allow += _consumer_api(streams.CONFIG, "audit_config")
    elif user == "admin":
        allow += _cli_publish()
    elif user == KEYS_TOOL_USER:
        allow += _kv(streams.KEYS_BUCKET)
    return allow


def _subscribe_allow(user: str) -> list[str]:
    allow = [f"{inbox_prefix(user)}.>"]
    if user == "policy":
        allow.append(POLICY_COMMANDS)
    elif user == "crypto":
        allow.append(CRYPTO_COMMANDS)
    elif user == "audit":
        allow.append(AUDIT_QUERY)
    return allow


def _cli_publish() -> list[str]:
    """Commands, audit queries, and reading, retrying or dropping parked messages."""
    return [
        "smimegw.cmd.*",
        AUDIT_QUERY,
        f"$JS.API.STREAM.INFO.{streams.PARKED}",
        f"$JS.API.STREAM.MSG.GET.{streams.PARKED}",
        f"$JS.API.STREAM.MSG.DELETE.{streams.PARKED}",
        "mail.*",
    ]


def _user_entry(user: str, password: str) -> dict[str, Any]:
    return {
        "user": user,
        "password": password,
        "permissions": {
            "publish": {"allow": _publish_allow(user)},
            "subscribe": {"allow": _subscribe_allow(user)},
            # Lets policy, crypto and audit reply to requests they serve.
            "allow_responses": True,
        },
    }


def server_config(
    passwords: Mapping[str, str], settings: Settings | None = None
) -> dict[str, Any]:
    """Build the authorization and TLS part of a nats-server configuration."""
    cli = {
        "user": CLI_USER,
        "password": secrets.token_urlsafe(32),
        "permissions": {
            "publish": {"allow": _cli_publish()},
            "subscribe": {"allow": ["_INBOX.>"]},
        },
    }
    users = [_user_entry(user, passwords[user]) for user in passwords]
    config: dict[str, Any] = {
        "authorization": {"users": [*users, cli]},
        # NOTE: anyone who reaches the NATS port without credentials acts as
        # the cli user and may change configuration. Keep the port private
        # until the CLI sends credentials of its own.
        "no_auth_user": CLI_USER,
    }
    if settings is not None and settings.nats.tls_cert and settings.nats.tls_key:
        tls: dict[str, Any] = {
            "cert_file": str(settings.nats.tls_cert),
            "key_file": str(settings.nats.tls_key),
        }
        if settings.nats.tls_ca:
            tls["ca_file"] = str(settings.nats.tls_ca)
        config["tls"] = tls
    return config


def new_passwords() -> dict[str, str]:
    users = (*SERVICE_USERS, KEYS_TOOL_USER)
    return {user: secrets.token_urlsafe(32) for user in users}


def keys_tool_password_path(settings: Settings) -> Path:
    """Return the path of the `keys` user's password (mode 0600, by `smimegw run`)."""
    return settings.data_dir / "nats" / "keys.password"


def write_secret(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)


def write_server_config(path: Path, config: Mapping[str, Any]) -> None:
    """Write the configuration with mode 0600: it contains every password."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)
    with os.fdopen(descriptor, "w") as file:
        json.dump(config, file, indent=2)


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """Build the client TLS context, which verifies the server with `nats.tls_ca`."""
    if settings.nats.tls_ca is None:
        return None
    try:
        return ssl.create_default_context(cafile=str(settings.nats.tls_ca))
    except (OSError, ssl.SSLError) as err:
        raise NatsAuthError(
            f"nats.tls_ca = {str(settings.nats.tls_ca)!r} cannot be loaded ({err}); "
            "give a PEM file with the CA certificate of the NATS server"
        ) from err


def broker_security(settings: Settings) -> NatsSecurity | None:
    """FastStream's security option from `nats.user`, `nats.password`, `nats.tls_ca`."""
    context = tls_context(settings)
    nats = settings.nats
    if nats.user:
        return NatsUserPassword(
            nats.user, nats.password.get_secret_value(), ssl_context=context
        )
    if context is not None:
        return NatsSecurity(ssl_context=context)
    return None


def connect_options(settings: Settings) -> dict[str, Any]:
    """Keyword arguments for `nats.connect` with this process's credentials."""
    options: dict[str, Any] = {}
    nats = settings.nats
    if nats.user:
        options["user"] = nats.user
        options["password"] = nats.password.get_secret_value()
        options["inbox_prefix"] = inbox_prefix(nats.user)
    context = tls_context(settings)
    if context is not None:
        options["tls"] = context
    return options
