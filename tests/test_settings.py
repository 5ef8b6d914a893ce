"""Settings: TOML file, SMIMEGW_* overrides, and clear errors."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError

from smimegw.settings import ConfigFileError, load_settings, parse_duration
from tests.harness import REPO


def test_defaults() -> None:
    settings = load_settings()
    assert settings.smtp.listen == "127.0.0.1:2525"
    assert settings.smtp.max_message_size == 33_554_432
    assert settings.delivery.max_age == timedelta(days=5)
    assert settings.nats.embedded_port == 4222
    assert settings.nats.url == ""


def test_file_then_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "gw.toml"
    config.write_text(
        'internal_domains = ["Example.ORG"]\n'
        '[smtp]\nlisten = "127.0.0.1:2600"\n'
        '[delivery]\nmax_age = "2h"\nrelay_host = "127.0.0.1:2601"\n'
    )
    monkeypatch.setenv("SMIMEGW_SMTP__LISTEN", "127.0.0.1:2700")
    settings = load_settings(config)
    assert settings.smtp.listen == "127.0.0.1:2700"
    assert settings.delivery.max_age == timedelta(hours=2)
    assert settings.delivery.relay_host == "127.0.0.1:2601"
    assert settings.internal_domains == ("example.org",)


def test_config_from_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "gw.toml"
    config.write_text('[nats]\nurl = "nats://127.0.0.1:4999"\n')
    monkeypatch.setenv("SMIMEGW_CONFIG", str(config))
    assert load_settings().nats.url == "nats://127.0.0.1:4999"


def test_missing_file_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigFileError, match=r"nope\.toml"):
        load_settings(tmp_path / "nope.toml")


def test_unknown_key_rejected(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text("[smtp]\nlisten_on = '127.0.0.1:25'\n")
    with pytest.raises(ValidationError, match="listen_on"):
        load_settings(config)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("30s", 30), ("5m", 300), ("2h", 7200), ("5d", 432000), (7, 7)],
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text).total_seconds() == seconds


def test_bad_duration_names_value() -> None:
    with pytest.raises(ValueError, match="'5 weeks'"):
        parse_duration("5 weeks")


def test_bad_relay_host(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text('[delivery]\nrelay_host = "mail.example.com"\n')
    with pytest.raises(ValidationError, match=r"delivery\.relay_host"):
        load_settings(config)


def test_cli_reports_bad_config_in_one_line(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text("data_dir = \n")
    result = subprocess.run(
        [sys.executable, "-m", "smimegw", "audit", "list", "--config", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith("smimegw: configuration file")
    assert len(result.stderr.strip().splitlines()) == 1


def test_cli_reports_unreachable_gateway(tmp_path: Path) -> None:
    from tests.harness import free_port

    config = tmp_path / "gw.toml"
    config.write_text(f'[nats]\nurl = "nats://127.0.0.1:{free_port()}"\n')
    result = subprocess.run(
        [sys.executable, "-m", "smimegw", "audit", "list", "--config", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "is the gateway running?" in result.stderr
