"""`smimegw run`, `serve` and `asyncapi`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from smimegw.commands import add_config
from smimegw.logs import configure_logging
from smimegw.service import SERVICE_NAMES
from smimegw.settings import load_settings


def cmd_run(args: argparse.Namespace) -> int:
    from smimegw.supervisor import run

    configure_logging("run")
    return run(load_settings(args.config), args.config)


def cmd_serve(args: argparse.Namespace) -> int:
    from smimegw.service import run_until_signal

    configure_logging(args.service)
    run_until_signal(args.service, load_settings(args.config))
    return 0


def cmd_asyncapi(args: argparse.Namespace) -> int:
    from smimegw.asyncapi import document

    text = document(load_settings(args.config))
    output = args.output or sys.stdout
    output.write(text + "\n")
    return 0


def register(commands: Any) -> None:
    run = commands.add_parser(
        "run",
        help="run the embedded nats-server (unless nats.url is set) and all services",
    )
    add_config(run)
    run.set_defaults(func=cmd_run)

    serve = commands.add_parser("serve", help="run one service against nats.url")
    serve.add_argument("service", choices=SERVICE_NAMES)
    add_config(serve)
    serve.set_defaults(func=cmd_serve)

    asyncapi = commands.add_parser("asyncapi", help="write the AsyncAPI document")
    asyncapi.add_argument("--output", type=argparse.FileType("w"), help="file to write")
    add_config(asyncapi)
    asyncapi.set_defaults(func=cmd_asyncapi)
