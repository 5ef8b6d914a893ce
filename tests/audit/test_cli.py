"""`smimegw audit verify` and `smimegw audit export` on both store backends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from services.audit import chain
from smimegw.cli import main
from tests.audit.conftest import Backend
from tests.audit.test_store_contract import START, event, records


def write_config(tmp_path: Path, backend: Backend) -> Path:
    config = tmp_path / "smimegw.toml"
    lines = [f'data_dir = "{tmp_path / "var"}"', "[audit]"]
    lines.append(f'database_url = "{backend.settings["database_url"]}"')
    config.write_text("\n".join(lines) + "\n")
    return config


@pytest.fixture
def config(tmp_path: Path, backend: Backend) -> Path:
    store = backend.open()
    store.add(records(*(event(i, minutes=i) for i in range(1, 6))))
    store.close()
    return write_config(tmp_path, backend)


def test_verify_reports_intact_store(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "verify", "--config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "audit log intact: 5 records" in out
    assert "head hash " in out


def test_verify_names_edited_row(
    config: Path, backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    backend.tamper("UPDATE audit_events SET queue_id = ? WHERE id = ?", ("QX", 2))
    assert main(["audit", "verify", "--config", str(config)]) == 1
    out = capsys.readouterr().out
    assert "FAILED at record 2 (event e0002)" in out
    assert "content changed" in out


def test_verify_names_deleted_row(
    config: Path, backend: Backend, capsys: pytest.CaptureFixture[str]
) -> None:
    backend.tamper("DELETE FROM audit_events WHERE id = ?", (4,))
    assert main(["audit", "verify", "--config", str(config), "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["ok"] is False
    assert result["record_id"] == 4
    assert "record 4 is missing" in result["reason"]


def test_export_writes_records_since(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "audit.jsonl"
    since = START.replace(minute=3).isoformat()
    argv = ["audit", "export", "--since", since, "--format", "jsonl"]
    assert main([*argv, "--output", str(output), "--config", str(config)]) == 0
    lines = output.read_text().splitlines()
    exported = [chain.StoredRecord(**json.loads(line)) for line in lines]
    assert [r.event_id for r in exported] == ["e0003", "e0004", "e0005"]
    for record in exported:
        assert chain.record_hash(record) == record.hash
    assert "exported 3 records" in capsys.readouterr().err


def test_export_to_stdout_chains(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["audit", "export", "--config", str(config)]) == 0
    lines = capsys.readouterr().out.splitlines()
    exported = [json.loads(line) for line in lines]
    assert exported[0]["prev_hash"] == chain.GENESIS
    assert exported[1]["prev_hash"] == exported[0]["hash"]
    assert len(exported) == 5


def test_verify_without_store_fails_clearly(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "empty.toml"
    config.write_text(f'data_dir = "{tmp_path / "nothing"}"\n')
    assert main(["audit", "verify", "--config", str(config)]) == 1
    assert "no audit store at" in capsys.readouterr().err
    assert not (tmp_path / "nothing").exists()
