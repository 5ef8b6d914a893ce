"""deploy/: the image, the compose file and the Kubernetes manifests.

`docker compose config` and `kubectl kustomize` render the files without an
engine or a cluster; each test skips, saying why, when its client is missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from smimegw.service import SERVICE_NAMES
from tests.harness import REPO

DEPLOY = REPO / "deploy"


def docker_compose() -> list[str]:
    """The compose command of this machine, or a skip saying what is missing."""
    if shutil.which("docker") is None:
        pytest.skip("the docker client is not installed")
    probe = subprocess.run(
        ["docker", "compose", "version"], capture_output=True, text=True, timeout=30
    )
    if probe.returncode != 0:
        pytest.skip(
            "the docker client has no compose plugin: "
            + " ".join((probe.stderr or probe.stdout).split())[:200]
        )
    return ["docker", "compose"]


def test_dockerfile_builds_in_stages_and_runs_unprivileged() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    stages = re.findall(r"^FROM \S+ AS (\w+)$", text, re.MULTILINE)
    assert stages == ["build", "runtime"]
    runtime = text[text.index("AS runtime") :]
    users = re.findall(r"^USER (\S+)$", runtime, re.MULTILINE)
    assert len(users) == 1
    assert users[0] == "${UID}:${UID}"
    assert re.search(r"^ARG UID=(\d+)$", runtime, re.MULTILINE).group(1) != "0"
    assert "/readyz" in runtime
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
    assert ignored[1] == "*", "the build context must start from nothing"


def test_compose_config_renders(tmp_path: Path) -> None:
    command = docker_compose()
    kek = tmp_path / "kek"
    kek.write_bytes(os.urandom(32))
    env = dict(os.environ, SMIMEGW_KEK_FILE=str(kek))
    rendered = subprocess.run(
        [*command, "-f", str(DEPLOY / "compose.yaml"), "config", "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert rendered.returncode == 0, rendered.stderr
    config = json.loads(rendered.stdout)
    services = config["services"]
    nats = [s for s in services if s.startswith("nats")]
    assert len(nats) == 3
    for name in nats:
        command_line = services[name]["command"]
        assert "--jetstream" in command_line
        assert "--routes" in command_line
    for name in SERVICE_NAMES:
        service = services[name]
        assert service["deploy"]["replicas"] == 2, name
        assert service["environment"]["SMIMEGW_NATS__REPLICAS"] == "3"
        assert "healthcheck" in service
    smtp = services["ingress"]["ports"]
    assert [p["target"] for p in smtp] == [2525]
    assert {"otel-collector", "jaeger"} <= set(services)


def test_kubernetes_manifests_render() -> None:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    # kustomize renders locally; it contacts no cluster.
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(DEPLOY / "kubernetes")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rendered.returncode == 0, rendered.stderr
    documents = rendered.stdout.split("\n---\n")
    deployments = {
        re.search(r"^  name: (\S+)$", d, re.MULTILINE).group(1): d
        for d in documents
        if re.search(r"^kind: Deployment$", d, re.MULTILINE)
    }
    assert set(deployments) == {f"smimegw-{name}" for name in SERVICE_NAMES}
    for name, document in deployments.items():
        for needed in (
            "replicas: 2",
            "readinessProbe:",
            "livenessProbe:",
            "path: /readyz",
            "path: /healthz",
            "requests:",
            "runAsNonRoot: true",
            "namespace: smimegw",
        ):
            assert needed in document, (name, needed)
    values = (DEPLOY / "kubernetes" / "nats-values.yaml").read_text()
    assert re.search(r"cluster:\n    enabled: true\n    replicas: 3\n", values)
    assert re.search(r"jetstream:\n    enabled: true\n", values)
