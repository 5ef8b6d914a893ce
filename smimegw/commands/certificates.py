"""`smimegw ca|cert|binding|config ...`: certificates, keys and bindings.

The commands act on a running gateway: files are read here and sent to the
service that owns them (crypto for anything with a private key, policy for the
rest), which validates them and records the change in the CONFIG stream.
Passwords come from --password-file, SMIMEGW_PASSWORD or a prompt, never from
the command line, where `ps` would show them.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import sys
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from schemas.base import Model
from schemas.commands import (
    CRYPTO_COMMANDS,
    POLICY_COMMANDS,
    BindingCreate,
    BindingDelete,
    CaDelete,
    CaImport,
    CertDelete,
    CertImport,
    CommandReply,
    Query,
    Upload,
)
from smimegw.client import send_command
from smimegw.commands import (
    CommandError,
    add_config,
    add_json,
    format_record,
    format_table,
)
from smimegw.settings import load_settings
from smimegw.x509 import ImportErrorCategory

PASSWORD_ENV = "SMIMEGW_PASSWORD"  # noqa: S105 (the variable's name)
PASSWORD_REQUIRED = ImportErrorCategory.PASSWORD_REQUIRED.value
PASSWORD_HINT = (
    f"Pass it with --password-file FILE, in the {PASSWORD_ENV} environment "
    "variable, or at the prompt that appears when the command runs in a terminal."
)
# A request is one NATS message; certificate and PKCS#12 files are far smaller.
MAX_UPLOAD = 512 * 1024


def read_upload(path: Path) -> Upload:
    try:
        size = path.stat().st_size
        if size > MAX_UPLOAD:
            raise CommandError(
                f"{path} has {size} bytes, more than the {MAX_UPLOAD} allowed; "
                "is it really a certificate or key file?"
            )
        return Upload.of(path.name, path.read_bytes())
    except OSError as err:
        raise CommandError(f"cannot read {path}: {err.strerror}") from err


def read_password(args: argparse.Namespace, needed: bool) -> SecretStr | None:
    if args.password_file is not None:
        try:
            text = args.password_file.read_text().rstrip("\r\n")
        except OSError as err:
            raise CommandError(
                f"cannot read password file {args.password_file}: {err.strerror}"
            ) from err
        return SecretStr(text)
    if PASSWORD_ENV in os.environ:
        return SecretStr(os.environ[PASSWORD_ENV])
    if needed and sys.stdin.isatty():
        return SecretStr(getpass.getpass("Password (empty for none): "))
    return None


def send(args: argparse.Namespace, subject: str, command: Model) -> CommandReply:
    settings = load_settings(args.config)
    reply = asyncio.run(send_command(settings, subject, command))
    for warning in reply.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    if not reply.ok:
        assert reply.error is not None
        message = reply.error.message
        if reply.error.category == PASSWORD_REQUIRED:
            message += f" {PASSWORD_HINT}"
        raise CommandError(f"{message} [{reply.error.category}]")
    return reply


def show(args: argparse.Namespace, result: Any, columns: list[str]) -> int:
    """Print a list as a table of `columns`, or one entry as labelled lines."""
    if args.json:
        print(json.dumps(result, indent=2))
    elif isinstance(result, list):
        print(format_table(result, columns))
    else:
        print(format_record(result))
    return 0


def cmd_ca_import(args: argparse.Namespace) -> int:
    command = CaImport(command="ca.import", files=tuple(map(read_upload, args.files)))
    reply = send(args, POLICY_COMMANDS, command)
    for entry in reply.result["imported"]:
        print(f"imported CA {entry['id']}  {entry['subject']}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    columns = {
        "ca.list": ["id", "status", "valid_to", "in_use", "subject"],
        "cert.list": ["name", "status", "valid_to", "in_use", "identity"],
        "binding.list": ["id", "type", "pattern", "status", "valid_to", "identity"],
        "history": ["sequence", "time", "type"],
    }[args.query]
    reply = send(args, POLICY_COMMANDS, Query(command=args.query))
    return show(args, reply.result, columns)


def cmd_binding_show(args: argparse.Namespace) -> int:
    query = Query(command="binding.show", entry_id=args.id)
    return show(args, send(args, POLICY_COMMANDS, query).result, [])


def cmd_ca_delete(args: argparse.Namespace) -> int:
    send(args, POLICY_COMMANDS, CaDelete(command="ca.delete", ca_id=args.id))
    print(f"deleted CA {args.id}")
    return 0


def cmd_cert_import(args: argparse.Namespace) -> int:
    command = CertImport(
        command="cert.import",
        name=args.name,
        password=read_password(args, needed=True),
        **_material(args),
    )
    reply = send(args, CRYPTO_COMMANDS, command)
    print(f"imported local certificate {args.name}  {reply.result['identity']}")
    return 0


def cmd_cert_delete(args: argparse.Namespace) -> int:
    send(args, POLICY_COMMANDS, CertDelete(command="cert.delete", name=args.name))
    print(f"deleted local certificate {args.name}")
    return 0


def _material(args: argparse.Namespace) -> dict[str, Upload]:
    if args.pkcs12 is not None:
        return {"pkcs12": read_upload(args.pkcs12)}
    if args.cert is not None and args.key is not None:
        return {"cert": read_upload(args.cert), "key": read_upload(args.key)}
    raise CommandError("give --pkcs12 FILE, or --cert FILE together with --key FILE")


def cmd_binding_create(args: argparse.Namespace) -> int:
    if args.kind == "external":
        command = BindingCreate(
            command="binding.create",
            kind="external",
            pattern=args.pattern,
            cert=read_upload(args.cert),
        )
        reply = send(args, POLICY_COMMANDS, command)
    else:
        material = {} if args.local_cert else _material(args)
        command = BindingCreate(
            command="binding.create",
            kind="internal",
            pattern=args.pattern,
            local_cert=args.local_cert,
            password=None if args.local_cert else read_password(args, needed=True),
            **material,
        )
        reply = send(args, CRYPTO_COMMANDS, command)
    result = reply.result
    print(f"created binding {result['id']}  {result['pattern']}  {result['identity']}")
    return 0


def cmd_binding_delete(args: argparse.Namespace) -> int:
    send(
        args,
        POLICY_COMMANDS,
        BindingDelete(command="binding.delete", binding_id=args.id),
    )
    print(f"deleted binding {args.id}")
    return 0


def _password_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--password-file",
        type=Path,
        help=f"file holding the password (else ${PASSWORD_ENV}, else a prompt)",
    )


def _list_parser(group: Any, query: str, help_text: str) -> None:
    parser = group.add_parser("list", help=help_text)
    add_config(parser)
    add_json(parser)
    parser.set_defaults(func=cmd_list, query=query)


def register(commands: Any) -> None:
    ca = commands.add_parser("ca", help="CA certificates").add_subparsers(
        dest="ca_command", required=True
    )
    ca_import = ca.add_parser("import", help="import CA certificates (PEM, DER, .p7b)")
    ca_import.add_argument("files", nargs="+", type=Path)
    add_config(ca_import)
    ca_import.set_defaults(func=cmd_ca_import)
    _list_parser(ca, "ca.list", "list CA certificates")
    ca_delete = ca.add_parser("delete", help="delete a CA nothing chains to")
    ca_delete.add_argument("id")
    add_config(ca_delete)
    ca_delete.set_defaults(func=cmd_ca_delete)

    cert = commands.add_parser(
        "cert", help="local certificates with keys"
    ).add_subparsers(dest="cert_command", required=True)
    cert_import = cert.add_parser("import", help="import a certificate with its key")
    cert_import.add_argument("name")
    source = cert_import.add_mutually_exclusive_group(required=True)
    source.add_argument("--pkcs12", type=Path, help="PKCS#12 file")
    source.add_argument("--cert", type=Path, help="PEM certificate (with --key)")
    cert_import.add_argument("--key", type=Path, help="PEM private key")
    _password_option(cert_import)
    add_config(cert_import)
    cert_import.set_defaults(func=cmd_cert_import)
    _list_parser(cert, "cert.list", "list local certificates")
    cert_delete = cert.add_parser("delete", help="delete a local certificate")
    cert_delete.add_argument("name")
    add_config(cert_delete)
    cert_delete.set_defaults(func=cmd_cert_delete)

    binding = commands.add_parser("binding", help="address-to-certificate bindings")
    bindings = binding.add_subparsers(dest="binding_command", required=True)
    create = bindings.add_parser("create", help="bind an address or @domain")
    kinds = create.add_subparsers(dest="kind", required=True)
    internal = kinds.add_parser("internal", help="our user's certificate and key")
    internal.add_argument("pattern", help="user@example.com or @example.com")
    source = internal.add_mutually_exclusive_group(required=True)
    source.add_argument("--pkcs12", type=Path, help="password-protected PKCS#12 file")
    source.add_argument("--cert", type=Path, help="PEM certificate (with --key)")
    source.add_argument("--local-cert", help="name of an imported local certificate")
    internal.add_argument("--key", type=Path, help="PEM private key, encrypted or not")
    _password_option(internal)
    add_config(internal)
    internal.set_defaults(func=cmd_binding_create)
    external = kinds.add_parser("external", help="a correspondent's certificate")
    external.add_argument("pattern", help="user@partner.example or @partner.example")
    external.add_argument("--cert", type=Path, required=True, help="PEM, DER or .p7b")
    add_config(external)
    external.set_defaults(func=cmd_binding_create)
    _list_parser(bindings, "binding.list", "list bindings with their status")
    binding_show = bindings.add_parser("show", help="one binding in full")
    binding_show.add_argument("id")
    add_config(binding_show)
    add_json(binding_show)
    binding_show.set_defaults(func=cmd_binding_show)
    binding_delete = bindings.add_parser("delete", help="delete a binding")
    binding_delete.add_argument("id")
    add_config(binding_delete)
    binding_delete.set_defaults(func=cmd_binding_delete)

    config = commands.add_parser("config", help="configuration history")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    history = config_commands.add_parser(
        "history", help="configuration events, oldest first"
    )
    add_config(history)
    add_json(history)
    history.set_defaults(func=cmd_list, query="history")
