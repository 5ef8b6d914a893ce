"""`smimegw run` as `make run` starts it: nats-server, five services, outbox."""

from __future__ import annotations

import json
import signal
import smtplib
import subprocess
import sys
import time
from pathlib import Path

from tests.harness import REPO, free_port


def wait_for_line(process: subprocess.Popen[str], prefix: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if line.startswith(prefix):
            return line.strip()
        if not line and process.poll() is not None:
            raise AssertionError(f"smimegw run exited with {process.returncode}")
    raise AssertionError(f"no line starting with {prefix!r} within {timeout} s")


def test_run_delivers_into_outbox(tmp_path: Path) -> None:
    smtp_port = free_port()
    config = tmp_path / "smimegw.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "var"}"\n'
        'internal_domains = ["example.com"]\n'
        # Empty file settings, as the README's sample writes them, mean unset.
        f'[smtp]\nlisten = "127.0.0.1:{smtp_port}"\ntls_cert = ""\ntls_key = ""\n'
        f'[delivery]\noutbox_dir = "{tmp_path / "outbox"}"\n'
        f"[nats]\nembedded_port = {free_port()}\n"
        '[keys]\nkek_file = ""\n'
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "smimegw", "run", "--config", str(config)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = wait_for_line(process, "SMTP listening on", timeout=60)
        assert line == f"SMTP listening on 127.0.0.1:{smtp_port}"
        with smtplib.SMTP("127.0.0.1", smtp_port, timeout=30) as client:
            refused = client.sendmail(
                "alice@example.com",
                ["bob@example.com"],
                b"From: alice@example.com\r\nSubject: first\r\n\r\nHello Bob.\r\n",
            )
        assert refused == {}
        deadline = time.monotonic() + 30
        files: list[Path] = []
        while time.monotonic() < deadline and not files:
            files = list((tmp_path / "outbox").glob("*.eml"))
            time.sleep(0.1)
        assert len(files) == 1
        stored = files[0].read_bytes()
        assert files[0].stat().st_mode & 0o077 == 0
        assert stored.startswith(
            b"X-Envelope-From: <alice@example.com>\r\n"
            b"X-Envelope-To: <bob@example.com>\r\n"
        )
        assert stored.endswith(b"Subject: first\r\n\r\nHello Bob.\r\n")

        types: list[str] = []
        for _ in range(20):
            audit = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "smimegw",
                    "audit",
                    "list",
                    "--json",
                    "--config",
                    str(config),
                ],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            types = [event["type"] for event in json.loads(audit.stdout)]
            if "mail.delivered" in types:
                break
            time.sleep(0.5)
        assert types[:4] == [
            "mail.received",
            "mail.routed",
            "mail.processed",
            "mail.delivered",
        ]
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=90) == 0


def test_run_reports_busy_port(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = tmp_path / "smimegw.toml"
        config.write_text(
            f'data_dir = "{tmp_path / "var"}"\n[nats]\nembedded_port = {port}\n'
        )
        result = subprocess.run(
            [sys.executable, "-m", "smimegw", "run", "--config", str(config)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"port 127.0.0.1:{port}" in result.stderr
    assert "nats.embedded_port" in result.stderr


def test_run_stops_on_unloadable_tls(tmp_path: Path) -> None:
    config = tmp_path / "smimegw.toml"
    config.write_text(
        f'data_dir = "{tmp_path / "var"}"\n'
        f'[smtp]\nlisten = "127.0.0.1:{free_port()}"\n'
        f'tls_cert = "{tmp_path / "missing.pem"}"\ntls_key = "{tmp_path / "k.pem"}"\n'
        f"[nats]\nembedded_port = {free_port()}\n"
    )
    result = subprocess.run(
        [sys.executable, "-m", "smimegw", "run", "--config", str(config)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "cannot load smtp.tls_cert" in result.stderr
    assert "missing.pem" in result.stderr
    assert "ingress cannot run with this configuration" in result.stderr
