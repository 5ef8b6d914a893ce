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
from smimegw.service import EXIT_CONFIG, SERVICE_NAMES, nats_url
from smimegw.settings import Settings, parse_host_port

log = logging.getLogger("smimegw.run")

# A service that exits on its own is started again after this pause.
_RESTART_DELAY = 1.0
# A service that exits this often within the window is not restarted again.
_MAX_RESTARTS = 5
_CRASH_WINDOW = 60.0
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
        index = (*SERVICE_NAMES, "admin").index(name)
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
        # One process per port: service N listens on the configured port + N.
        for variable, listen in (
            ("SMIMEGW_HEALTH__LISTEN", self.settings.health.listen),
            (
                "SMIMEGW_TELEMETRY__METRICS_LISTEN",
                self.settings.telemetry.metrics_listen,
            ),
        ):
            if listen:
                host, port = parse_host_port(listen, variable)
                env[variable] = f"{host}:{port + index}"
        return subprocess.Popen(command, env=env)

    def start(self) -> None:
        settings = self.settings
        kek = settings.kek_path
        if not kek.exists():
            kek.parent.mkdir(parents=True, exist_ok=True)
            keyvault.create_kek(kek)
            print(f"created the key-encryption key {kek} (mode 0600)", flush=True)
        if not settings.nats.url:
            # Before any file is written: a second `smimegw run` on the same
            # data directory must not replace the running server's passwords.
            embedded.check_port_free(settings.nats.embedded_port)
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
        self._wait_for_smtp(host, port, timeout=60.0)
        print(f"SMTP listening on {host}:{port}", flush=True)
        if settings.delivery.relay_host:
            print(f"delivering to {settings.delivery.relay_host}", flush=True)
        else:
            print(f"delivering into {settings.delivery.outbox_dir}/", flush=True)
        print("press Ctrl-C to stop", flush=True)

    def _wait_for_smtp(self, host: str, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, child in self.children.items():
                if child.poll() == EXIT_CONFIG:
                    raise embedded.EmbeddedServerError(
                        f"{name} cannot run with this configuration; see its error "
                        "above"
                    )
            try:
                embedded.wait_for_port(host, port, timeout=0.5)
                return
            except embedded.EmbeddedServerError:
                continue
        raise embedded.EmbeddedServerError(
            f"ingress did not listen on {host}:{port} within {timeout:.0f} s"
        )

    def watch(self) -> int:
        """Restart services that exit, until a signal requests a stop.

        Returns the exit status for `smimegw run`: 0 after a requested stop, 1
        when a service cannot run with its configuration or keeps crashing.
        """
        restarts: dict[str, list[float]] = {}
        while not self.stopping:
            for name, child in list(self.children.items()):
                if child.poll() is None or self.stopping:
                    continue
                if child.returncode == EXIT_CONFIG:
                    print(
                        f"{name} cannot run with this configuration (see its "
                        "error above); stopping",
                        file=sys.stderr,
                        flush=True,
                    )
                    return 1
                now = time.monotonic()
                recent = [t for t in restarts.get(name, []) if now - t < _CRASH_WINDOW]
                if len(recent) >= _MAX_RESTARTS:
                    print(
                        f"{name} exited {len(recent) + 1} times within "
                        f"{_CRASH_WINDOW:.0f} s; stopping",
                        file=sys.stderr,
                        flush=True,
                    )
                    return 1
                restarts[name] = [*recent, now]
                log.error(
                    "%s exited with status %s; restarting", name, child.returncode
                )
                time.sleep(_RESTART_DELAY)
                self.children[name] = self._spawn(name)
            if self.nats is not None and self.nats.poll() is not None:
                log.error("the embedded nats-server exited; stopping")
                return 1
            time.sleep(0.2)
        return 0

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
        status = supervisor.watch()
    finally:
        print("stopping", flush=True)
        supervisor.stop()
    return status
