"""A nats-server with the gateway's per-service users, for permission tests."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr

from smimegw import embedded, natsauth
from smimegw.settings import Settings
from tests.harness import NatsServer


class AuthNatsServer(NatsServer):
    """nats-server started with the generated users and permissions."""

    def __init__(self, store: Path) -> None:
        super().__init__(store)
        self.passwords = natsauth.new_passwords()
        self.config = store.parent / "nats-auth.json"

    def start(self) -> None:
        natsauth.write_server_config(
            self.config, natsauth.server_config(self.passwords)
        )
        self.process = embedded.start_server(
            self.store, self.port, extra_args=("-c", str(self.config))
        )

    def settings_for(self, base: Settings, user: str) -> Settings:
        nats = base.nats.model_copy(
            update={
                "url": self.url,
                "user": user,
                "password": SecretStr(self.passwords[user]),
            }
        )
        return base.model_copy(update={"nats": nats})

    def violations(self) -> list[str]:
        log = (self.store / "nats-server.log").read_text(errors="replace")
        return [line for line in log.splitlines() if "Permissions Violation" in line]
