"""Policy entry point: consumes mail.received and serves configuration commands."""

from __future__ import annotations

from schemas import MailReceived
from schemas.commands import POLICY_COMMANDS
from services.policy.config import PolicyConfig
from services.policy.handlers import PolicyHandlers
from smimegw.configbus import CommandServer
from smimegw.configstate import ConfigFollower
from smimegw.runtime import Runtime


class PolicyService:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.handlers = PolicyHandlers(runtime)
        runtime.consume("mail.received", MailReceived, self.handlers.on_received)
        self.follower: ConfigFollower | None = None
        self.commands: CommandServer | None = None

    async def start(self) -> None:
        self.follower = ConfigFollower(self.runtime.js)
        await self.follower.start()
        config = PolicyConfig(self.runtime, self.follower)
        self.commands = CommandServer(
            self.runtime, self.follower, POLICY_COMMANDS, config.handlers()
        )
        await self.commands.start()

    async def stop(self) -> None:
        if self.commands is not None:
            await self.commands.stop()
        if self.follower is not None:
            await self.follower.stop()


def build(runtime: Runtime) -> PolicyService:
    return PolicyService(runtime)
