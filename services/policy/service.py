"""Policy entry point: plans received mail, serves configuration, releases holds."""

from __future__ import annotations

import asyncio

from schemas import MailReceived
from schemas.commands import POLICY_COMMANDS
from services.policy.config import PolicyConfig
from services.policy.handlers import HeldCommands, PolicyHandlers
from services.policy.hold import run_checks
from services.policy.partners import CapabilityRecorder
from smimegw.configbus import CommandServer
from smimegw.configstate import ConfigFollower
from smimegw.runtime import Runtime


class PolicyService:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.handlers = PolicyHandlers(runtime)
        runtime.consume("mail.received", MailReceived, self.handlers.on_received)
        self.capabilities = CapabilityRecorder(runtime)
        self.follower: ConfigFollower | None = None
        self.commands: CommandServer | None = None
        self.stopping = asyncio.Event()
        self.hold_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.follower = ConfigFollower(self.runtime.js)
        await self.follower.start()
        self.handlers.follower = self.follower
        config = PolicyConfig(self.runtime, self.follower)
        held = HeldCommands(self.handlers.hold_queue, self.handlers.replan)
        self.commands = CommandServer(
            self.runtime,
            self.follower,
            POLICY_COMMANDS,
            config.handlers() | held.handlers(),
        )
        await self.commands.start()
        self.hold_task = asyncio.create_task(
            run_checks(
                self.handlers.hold_queue,
                self.handlers.replan,
                self.runtime.settings.policy.hold_check_interval,
                self.stopping,
            )
        )

    async def stop(self) -> None:
        self.stopping.set()
        if self.hold_task is not None:
            await self.hold_task
        if self.commands is not None:
            await self.commands.stop()
        if self.follower is not None:
            await self.follower.stop()


def build(runtime: Runtime) -> PolicyService:
    return PolicyService(runtime)
