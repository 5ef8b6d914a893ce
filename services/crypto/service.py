"""Crypto entry point: consumes mail.routed."""

from __future__ import annotations

from schemas import MailRouted
from services.crypto.handlers import CryptoHandlers
from smimegw.runtime import Runtime


class CryptoService:
    def __init__(self, runtime: Runtime) -> None:
        self.handlers = CryptoHandlers(runtime)
        runtime.consume("mail.routed", MailRouted, self.handlers.on_routed)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


def build(runtime: Runtime) -> CryptoService:
    return CryptoService(runtime)
