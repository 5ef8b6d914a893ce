"""The `smimegw` command line run in this process against services under test."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from smimegw import cli
from tests.config.conftest import Admin, admin  # noqa: F401 (the fixture)


@dataclass(frozen=True)
class Run:
    status: int
    out: str
    err: str


class Cli:
    """Runs `smimegw ARGS` against the gateway of the `admin` fixture."""

    def __init__(self, capsys: pytest.CaptureFixture[str], url: str) -> None:
        self.capsys = capsys
        self.url = url

    async def __call__(self, *args: str) -> Run:
        self.capsys.readouterr()
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("SMIMEGW_NATS__URL", self.url)
            patch.delenv("SMIMEGW_PASSWORD", raising=False)
            patch.delenv("SMIMEGW_CONFIG", raising=False)
            # In a thread: the services under test run in this test's event loop.
            status = await asyncio.to_thread(cli.main, list(args))
        captured = self.capsys.readouterr()
        return Run(status, captured.out, captured.err)


@pytest.fixture
def smimegw(admin: Admin, capsys: pytest.CaptureFixture[str]) -> Cli:  # noqa: F811
    return Cli(capsys, admin.gateway.url)
