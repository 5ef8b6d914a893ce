"""Crypto entry point: consumes mail.routed and serves key-material commands."""

from __future__ import annotations

from schemas import MailRouted
from schemas.commands import CRYPTO_COMMANDS
from services.crypto import keyvault
from services.crypto.config import CryptoConfig
from services.crypto.handlers import CryptoHandlers
from services.crypto.incoming import IncomingProcessor
from services.crypto.keystore import KeyStore
from services.crypto.outgoing import OutgoingProcessor
from smimegw.configbus import CommandServer
from smimegw.configstate import ConfigFollower
from smimegw.runtime import Runtime


class CryptoService:
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.handlers = CryptoHandlers(runtime)
        runtime.consume("mail.routed", MailRouted, self.handlers.on_routed)
        self.follower: ConfigFollower | None = None
        self.commands: CommandServer | None = None

    async def start(self) -> None:
        kek = keyvault.load_kek(self.runtime.settings.kek_path)
        self.keys = KeyStore(self.runtime.js, kek)
        self.follower = ConfigFollower(self.runtime.js)
        await self.follower.start()
        self.handlers.protect = OutgoingProcessor(self.follower, self.keys).protect
        self.handlers.open = IncomingProcessor(self.follower, self.keys).open
        config = CryptoConfig(self.runtime, self.follower, self.keys)
        self.commands = CommandServer(
            self.runtime, self.follower, CRYPTO_COMMANDS, config.handlers()
        )
        await self.commands.start()

    async def stop(self) -> None:
        if self.commands is not None:
            await self.commands.stop()
        if self.follower is not None:
            await self.follower.stop()


def build(runtime: Runtime) -> CryptoService:
    return CryptoService(runtime)
