"""Policy entry point: consumes mail.received."""

from __future__ import annotations

from schemas import MailReceived
from services.policy.handlers import PolicyHandlers
from smimegw.runtime import Runtime


class PolicyService:
    def __init__(self, runtime: Runtime) -> None:
        self.handlers = PolicyHandlers(runtime)
        runtime.consume("mail.received", MailReceived, self.handlers.on_received)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


def build(runtime: Runtime) -> PolicyService:
    return PolicyService(runtime)
