"""The `smimegw` command line run in this process against services under test."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import ClassVar

import pytest

from smimegw import cli
from tests.config.conftest import Admin, admin  # noqa: F401 (the fixture)


@dataclass(frozen=True)
class Run:
    status: int
    out: str
    err: str


class _CliEnvironment:
    """The environment of CLI runs, set by the first and restored by the last.

    Runs overlap when a test starts several at once. Each one setting and
    restoring the variables itself restored a neighbour's value last, and the
    NATS URL of a finished test stayed in the environment of every later one.
    """

    users: ClassVar[int] = 0
    saved: ClassVar[dict[str, str | None]] = {}
    url: ClassVar[str] = ""

    @classmethod
    @contextmanager
    def use(cls, url: str) -> Iterator[None]:
        if cls.users == 0:
            cls.saved = {name: os.environ.get(name) for name in _VARIABLES}
            os.environ.pop("SMIMEGW_PASSWORD", None)
            os.environ.pop("SMIMEGW_CONFIG", None)
            os.environ["SMIMEGW_NATS__URL"] = cls.url = url
        elif url != cls.url:
            raise RuntimeError("CLI runs against two gateways at once")
        cls.users += 1
        try:
            yield
        finally:
            cls.users -= 1
            if cls.users == 0:
                for name, value in cls.saved.items():
                    if value is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = value


_VARIABLES = ("SMIMEGW_NATS__URL", "SMIMEGW_PASSWORD", "SMIMEGW_CONFIG")


class Cli:
    """Runs `smimegw ARGS` against the gateway of the `admin` fixture."""

    def __init__(self, capsys: pytest.CaptureFixture[str], url: str) -> None:
        self.capsys = capsys
        self.url = url

    async def __call__(self, *args: str) -> Run:
        self.capsys.readouterr()
        with _CliEnvironment.use(self.url):
            # In a thread: the services under test run in this test's event loop.
            status = await asyncio.to_thread(cli.main, list(args))
        captured = self.capsys.readouterr()
        return Run(status, captured.out, captured.err)


@pytest.fixture
def smimegw(admin: Admin, capsys: pytest.CaptureFixture[str]) -> Cli:  # noqa: F811
    return Cli(capsys, admin.gateway.url)
