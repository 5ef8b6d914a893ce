"""The gateway under test: `smimegw run` in its own processes, set up by its CLI."""

from __future__ import annotations

import contextlib
import io
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from benchmarks import procstat
from tests.harness import free_port

REPO = Path(__file__).resolve().parent.parent
STOP_TIMEOUT = 60.0


def wait_for_port(port: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


@dataclass(frozen=True)
class CommandResult:
    status: int
    output: str


def smimegw_command(argv: list[str]) -> CommandResult:
    """Run one `smimegw` CLI command in this process and capture what it prints.

    Calling the CLI's entry point saves a Python start per command, which
    matters for the 50 bindings of the many-recipients scenario.
    """
    from smimegw.cli import main

    output = io.StringIO()
    with contextlib.redirect_stdout(output), contextlib.redirect_stderr(output):
        try:
            status = main(argv)
        except SystemExit as exit_:
            status = exit_.code if isinstance(exit_.code, int) else 2
    return CommandResult(status, output.getvalue())


def command_exists(*words: str) -> bool:
    """True when `smimegw WORDS --help` is a known command of this gateway."""
    return smimegw_command([*words, "--help"]).status == 0


class GatewayProcess:
    """`smimegw run` with its own data directory, ports and log file."""

    def __init__(self, directory: Path, relay_port: int) -> None:
        self.directory = directory
        self.smtp_port = free_port()
        self.nats_port = free_port()
        self.config = directory / "smimegw.toml"
        self.log_path = directory / "smimegw.log"
        directory.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            f'data_dir = "{directory / "var"}"\n'
            'internal_domains = ["example.com"]\n'
            'trusted_networks = ["127.0.0.0/8"]\n'
            "[smtp]\n"
            f'listen = "127.0.0.1:{self.smtp_port}"\n'
            'hostname = "gw.bench.localhost"\n'
            # The baselines take any number of messages per connection; the
            # gateway's default of 100 would add reconnections to its figures.
            "max_messages_per_connection = 1000000\n"
            "[delivery]\n"
            f'relay_host = "127.0.0.1:{relay_port}"\n'
            f'outbox_dir = "{directory / "outbox"}"\n'
            "[nats]\n"
            f"embedded_port = {self.nats_port}\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90.0) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SMIMEGW_")}
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "smimegw", "run", "--config", str(self.config)],
                cwd=self.directory,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if not wait_for_port(self.smtp_port, timeout):
            self.stop()
            raise RuntimeError(
                f"the gateway did not listen on 127.0.0.1:{self.smtp_port} within "
                f"{timeout:.0f} s; see {self.log_path}"
            )

    def pids(self) -> dict[str, int]:
        """Find the service processes and nats-server, by name."""
        assert self.process is not None
        named: dict[str, int] = {}
        for pid in procstat.descendants(self.process.pid):
            argv = procstat.command_line(pid)
            if "serve" in argv and argv.index("serve") + 1 < len(argv):
                named[argv[argv.index("serve") + 1]] = pid
            elif argv and argv[0].endswith("nats-server"):
                named["nats-server"] = pid
        return named

    def cli(self, *argv: str) -> CommandResult:
        return smimegw_command([*argv, "--config", str(self.config)])

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class ServerProcess:
    """A Python server of the harness (sink, relay baselines) in its own process."""

    def __init__(self, module: str, *args: str, log_path: Path) -> None:
        self.module = module
        self.args = args
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, port: int, timeout: float = 30.0) -> None:
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.module, *self.args],
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        if not wait_for_port(port, timeout):
            self.stop()
            raise RuntimeError(f"{self.module} did not listen on 127.0.0.1:{port}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
