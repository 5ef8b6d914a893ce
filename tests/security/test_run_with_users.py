"""`smimegw run` with its NATS users: CLI, admin API and KEK rotation all work."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.harness import REPO, free_port
from tests.incoming.conftest import THUNDERBIRD
from tests.test_run import wait_for_line


def smimegw(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "smimegw", *args, "--config", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
def test_run_serves_cli_api_and_rotation(tmp_path: Path) -> None:
    admin_port = free_port()
    data = tmp_path / "var"
    config = tmp_path / "smimegw.toml"
    config.write_text(
        f'data_dir = "{data}"\n'
        f'[smtp]\nlisten = "127.0.0.1:{free_port()}"\n'
        f'[delivery]\noutbox_dir = "{tmp_path / "outbox"}"\n'
        f"[nats]\nembedded_port = {free_port()}\n"
        f'[admin]\nlisten = "127.0.0.1:{admin_port}"\n'
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "smimegw", "run", "--config", str(config)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        wait_for_line(process, "press Ctrl-C", timeout=90)
        auth = json.loads((data / "nats" / "auth.json").read_text())
        users = {entry["user"] for entry in auth["authorization"]["users"]}
        assert {"ingress", "crypto", "admin", "keys", "cli"} <= users

        # The CLI connects without credentials, as the cli user.
        imported = smimegw(config, "ca", "import", str(THUNDERBIRD / "TestCA.pem"))
        assert imported.returncode == 0, imported.stderr
        password_file = tmp_path / "password"
        password_file.write_text("nss\n")
        created = smimegw(
            config,
            "binding",
            "create",
            "internal",
            "bob@example.com",
            "--pkcs12",
            str(THUNDERBIRD / "Bob.p12"),
            "--password-file",
            str(password_file),
        )
        assert created.returncode == 0, created.stderr

        token = smimegw(config, "admin", "token", "create", "--role", "read")
        assert token.returncode == 0, token.stderr
        headers = {"Authorization": f"Bearer {token.stdout.strip()}"}
        base = f"http://127.0.0.1:{admin_port}"
        bindings = httpx.get(f"{base}/api/v1/bindings", headers=headers, timeout=60)
        assert bindings.status_code == 200, bindings.text
        assert [b["pattern"] for b in bindings.json()] == ["bob@example.com"]

        rotated = smimegw(config, "keys", "rotate-kek")
        assert rotated.returncode == 0, rotated.stderr
        assert "sealed 1 key " in rotated.stdout
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=90) == 0
