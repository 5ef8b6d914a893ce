"""`smimegw admin nats-users`: the files a deployment gives nats-server and services."""

from __future__ import annotations

import asyncio
import stat
import subprocess
import sys
from pathlib import Path

import nats

from smimegw import embedded, natsauth
from tests.harness import REPO, free_port


async def test_written_users_enforced(tmp_path: Path) -> None:
    output = tmp_path / "nats-users"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "smimegw",
            "admin",
            "nats-users",
            "--output",
            str(output),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for path in output.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    lines = (output / "ingress.env").read_text().splitlines()
    env = dict(line.split("=", 1) for line in lines)
    assert env["SMIMEGW_NATS__USER"] == "ingress"

    port = free_port()
    server = embedded.start_server(
        tmp_path / "store", port, extra_args=("-c", str(output / "nats-auth.json"))
    )
    errors: list[str] = []

    async def on_error(error: Exception) -> None:
        errors.append(str(error).lower())

    try:
        nc = await nats.connect(
            f"nats://127.0.0.1:{port}",
            user="ingress",
            password=env["SMIMEGW_NATS__PASSWORD"],
            inbox_prefix=natsauth.inbox_prefix("ingress"),
            error_cb=on_error,
        )
        await nc.subscribe("$KV.keys.>")
        await nc.publish("mail.received", b"{}")
        await nc.flush()
        # The error callback runs as a task after the server's -ERR arrived.
        await asyncio.sleep(0.2)
        await nc.close()
    finally:
        server.terminate()
        server.wait(timeout=15)
    assert any('subscription to "$kv.keys.>"' in e for e in errors)
    assert not any("mail.received" in e for e in errors)
