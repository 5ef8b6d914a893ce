"""`smimegw admin token ...` as an operator runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from services.admin.tokens import Role, TokenStore
from tests.harness import REPO


def run_cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "smimegw",
            "admin",
            "token",
            *args,
            "--config",
            str(config),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_create_list_revoke(tmp_path: Path) -> None:
    config = tmp_path / "smimegw.toml"
    config.write_text(f'data_dir = "{tmp_path / "var"}"\n')
    created = run_cli(config, "create", "--role", "read", "--name", "monitoring")
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("smgw_")
    store = TokenStore(tmp_path / "var" / "admin-tokens.json")
    assert store.verify(token) is Role.READ
    assert token not in store.path.read_text()

    listed = run_cli(config, "list")
    [entry] = store.entries()
    assert entry.token_id in listed.stdout
    assert "monitoring" in listed.stdout
    assert token.rsplit("_", 1)[1] not in listed.stdout

    assert run_cli(config, "revoke", entry.token_id).returncode == 0
    assert store.verify(token) is None
    missing = run_cli(config, "revoke", entry.token_id)
    assert missing.returncode == 1
    assert "no token has id" in missing.stderr


def test_unknown_role_refused(tmp_path: Path) -> None:
    config = tmp_path / "smimegw.toml"
    config.write_text(f'data_dir = "{tmp_path / "var"}"\n')
    result = run_cli(config, "create", "--role", "admin")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
