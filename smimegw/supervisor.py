"""`smimegw run`: the embedded nats-server and all five services on one machine."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from services.crypto import keyvault
from smimegw import embedded, natsauth
from smimegw.service import SERVICE_NAMES, nats_url
from smimegw.settings import Settings, parse_host_port

log = logging.getLogger("smimegw.run")

# A service that exits on its own is started again after this pause.
_RESTART_DELAY = 1.0
# Each service gets this long to drain after SIGTERM before SIGKILL.
_STOP_TIMEOUT = 45.0


class Supervisor:
    def __init__(self, settings: Settings, config: Path | None) -> None:
        self.settings = settings
        self.config = config
        self.nats: subprocess.Popen[bytes] | None = None
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.stopping = False
        # Per-service NATS passwords of the embedded server, new on every start.
        self.passwords: dict[str, str] = {}

    def _spawn(self, name: str) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "smimegw", "serve", name]
        if name == "admin":
            command = [sys.executable, "-m", "smimegw", "admin", "serve"]
        if self.config is not None:
            command += ["--config", str(self.config)]
        env = dict(os.environ, SMIMEGW_NATS__URL=nats_url(self.settings))
        if self.passwords:
            # The environment of a process is readable only by its user and root.
            env["SMIMEGW_NATS__USER"] = name
            env["SMIMEGW_NATS__PASSWORD"] = self.passwords[name]
        return subprocess.Popen(command, env=env)

    def start(self) -> None:
        settings = self.settings
        kek = settings.kek_path
        if not kek.exists():
            kek.parent.mkdir(parents=True, exist_ok=True)
            keyvault.create_kek(kek)
            print(f"created the key-encryption key {kek} (mode 0600)", flush=True)
        if not settings.nats.url:
            store = settings.data_dir / "nats"
            self.passwords = natsauth.new_passwords()
            auth = store / "auth.json"
            natsauth.write_server_config(
                auth, natsauth.server_config(self.passwords, settings)
            )
            self.nats = embedded.start_server(
                store, settings.nats.embedded_port, extra_args=("-c", str(auth))
            )
            natsauth.write_secret(
                natsauth.keys_tool_password_path(settings),
                self.passwords[natsauth.KEYS_TOOL_USER],
            )
            print(
                f"nats-server with JetStream on {nats_url(settings)} (store {store})",
                flush=True,
            )
        for name in SERVICE_NAMES:
            self.children[name] = self._spawn(name)
        if settings.admin.listen:
            self.children["admin"] = self._spawn("admin")
            print(f"admin API on http://{settings.admin.listen}/docs", flush=True)
        host, port = parse_host_port(settings.smtp.listen, "smtp.listen")
        embedded.wait_for_port(host, port, timeout=60.0)
        print(f"SMTP listening on {host}:{port}", flush=True)
        if settings.delivery.relay_host:
            print(f"delivering to {settings.delivery.relay_host}", flush=True)
        else:
            print(f"delivering into {settings.delivery.outbox_dir}/", flush=True)
        print("press Ctrl-C to stop", flush=True)

    def watch(self) -> None:
        """Restart services that exit, until a signal requests a stop."""
        while not self.stopping:
            for name, child in list(self.children.items()):
                if child.poll() is not None and not self.stopping:
                    log.error(
                        "%s exited with status %s; restarting", name, child.returncode
                    )
                    time.sleep(_RESTART_DELAY)
                    self.children[name] = self._spawn(name)
            if self.nats is not None and self.nats.poll() is not None:
                log.error("the embedded nats-server exited; stopping")
                break
            time.sleep(0.2)

    def stop(self) -> None:
        self.stopping = True
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + _STOP_TIMEOUT
        for name, child in self.children.items():
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.error("%s did not stop in time; killing it", name)
                child.kill()
                child.wait()
        if self.nats is not None and self.nats.poll() is None:
            self.nats.send_signal(signal.SIGTERM)
            try:
                self.nats.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.nats.kill()


def run(settings: Settings, config: Path | None) -> int:
    supervisor = Supervisor(settings, config)

    def request_stop(signum: int, frame: FrameType | None) -> None:
        supervisor.stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        supervisor.start()
        supervisor.watch()
    finally:
        print("stopping", flush=True)
        supervisor.stop()
    return 0
