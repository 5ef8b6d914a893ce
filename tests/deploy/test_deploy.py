"""deploy/: the image, the compose file and the Kubernetes manifests.

`docker compose config` and `kubectl kustomize` render the files without an
engine or a cluster; each test skips, saying why, when its client is missing.
The NATS user checks read compose.yaml as text (PyYAML is not a dependency).
"""

from __future__ import annotations

import base64
import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from smimegw import embedded
from smimegw.service import SERVICE_NAMES
from tests.harness import REPO

DEPLOY = REPO / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
# The folder that compose.yaml reads the output of `smimegw admin nats-users` from.
SECRETS_DIR = "${SMIMEGW_SECRETS_DIR:-./secrets}"


@pytest.fixture(scope="module")
def nats_users(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run `smimegw admin nats-users` once and return its output folder."""
    output = tmp_path_factory.mktemp("nats-users")
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
    return output


def env_user(path: Path) -> str:
    """Return SMIMEGW_NATS__USER of a generated .env file (never the password)."""
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines)["SMIMEGW_NATS__USER"]


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


def test_compose_config_renders(tmp_path: Path, nats_users: Path) -> None:
    command = docker_compose()
    kek = tmp_path / "kek"
    kek.write_bytes(os.urandom(32))
    env = dict(
        os.environ, SMIMEGW_KEK_FILE=str(kek), SMIMEGW_SECRETS_DIR=str(nats_users)
    )
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
        config_file = command_line[command_line.index("--config") + 1]
        targets = [secret["target"] for secret in services[name]["secrets"]]
        assert config_file == "/run/secrets/nats-auth.json", name
        assert "nats-auth.json" in targets, name
    assert config["secrets"]["nats-auth"]["file"] == str(nats_users / "nats-auth.json")
    for name in SERVICE_NAMES:
        service = services[name]
        assert service["deploy"]["replicas"] == 2, name
        assert service["environment"]["SMIMEGW_NATS__REPLICAS"] == "3"
        assert "healthcheck" in service
        # Compose versions differ: some copy the env_file variables into
        # `environment`, others (2.24.7, for one) keep only the file list.
        env_files = [
            Path(entry["path"] if isinstance(entry, dict) else entry)
            for entry in service.get("env_file", [])
        ]
        user = service["environment"].get("SMIMEGW_NATS__USER")
        assert user in (None, name), name
        assert env_files == [nats_users / f"{name}.env"], name
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


def compose_blocks(text: str, indent: int) -> dict[str, str]:
    """Split compose.yaml text into the blocks of the keys at this indentation."""
    blocks: dict[str, str] = {}
    key_line = re.compile(rf"^ {{{indent}}}([\w.-]+):")
    name = ""
    for line in text.splitlines():
        stripped = line.lstrip(" ")
        if not stripped or stripped.startswith("#"):
            continue
        depth = len(line) - len(stripped)
        match = key_line.match(line)
        if match:
            name = match.group(1)
            blocks[name] = line + "\n"
        elif depth < indent:
            name = ""
        elif name:
            blocks[name] += line + "\n"
    return blocks


def test_compose_nats_users_per_service(nats_users: Path) -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    top = compose_blocks(text, 0)
    services = compose_blocks(top["services"], 2)
    env_file_line = re.compile(r'^    env_file: \["([^"]+)"\]$', re.MULTILINE)
    for name in SERVICE_NAMES:
        env_files = env_file_line.findall(services[name])
        assert env_files == [f"{SECRETS_DIR}/{name}.env"], name
        generated = Path(env_files[0].replace(SECRETS_DIR, str(nats_users)))
        assert env_user(generated) == name
    # One reader per credentials file, and none in the settings every service shares.
    every_env_file = env_file_line.findall(top["services"])
    assert len(every_env_file) == len(set(every_env_file))
    assert "env_file" not in top["x-service"]
    assert not re.search(r"^\s*SMIMEGW_NATS__(USER|PASSWORD):", text, re.MULTILINE)

    nats_anchor = top["x-nats"]
    assert "- source: nats-auth\n" in nats_anchor
    assert "target: nats-auth.json\n" in nats_anchor
    nats = [name for name in services if name.startswith("nats")]
    assert len(nats) == 3
    for name in nats:
        assert "<<: *nats\n" in services[name], name
        command = re.search(r"^    command: (\[.*\])$", services[name], re.MULTILINE)
        arguments = json.loads(command.group(1))
        config_file = arguments[arguments.index("--config") + 1]
        assert config_file == "/run/secrets/nats-auth.json", name
    secret = compose_blocks(top["secrets"], 2)["nats-auth"]
    assert f"file: {SECRETS_DIR}/nats-auth.json\n" in secret
    assert (nats_users / "nats-auth.json").is_file()


def mapping_fields(lines: list[str], index: int) -> dict[str, str]:
    """Return the scalar fields of the YAML mapping under the key at lines[index]."""
    key = lines[index]
    key_column = len(key) - len(key.lstrip(" -"))
    fields: dict[str, str] = {}
    child_column = -1
    for line in lines[index + 1 :]:
        stripped = line.lstrip(" ")
        column = len(line) - len(stripped)
        if not stripped:
            continue
        if column <= key_column:
            break
        child_column = column if child_column < 0 else child_column
        field = re.fullmatch(r"([\w.-]+): (\S.*)", stripped)
        if column == child_column and field:
            fields[field.group(1)] = field.group(2)
    return fields


def secrets_referenced(document: str) -> set[str]:
    """Return the Secrets a rendered Deployment reads: envFrom, env and volumes."""
    lines = document.splitlines()
    names = set()
    for index, line in enumerate(lines):
        if re.fullmatch(r"\s*(- )?(secretRef|secretKeyRef):", line):
            names.add(mapping_fields(lines, index)["name"])
        found = re.fullmatch(r"\s*secretName: (\S+)", line)
        if found:
            names.add(found.group(1))
    return names


def render_with_nats_secrets(overlay: Path, nats_users: Path) -> list[str]:
    """Render deploy/kubernetes with one Secret per service from its .env file.

    The overlay's secretGenerator does offline what the README's
    `kubectl create secret generic smimegw-SERVICE-nats --from-env-file=...`
    does against a cluster.
    """
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed")
    overlay.mkdir()
    generators = []
    for name in SERVICE_NAMES:
        # kustomize reads files only inside the kustomization's folder.
        shutil.copyfile(nats_users / f"{name}.env", overlay / f"{name}.env")
        generators.append(f"  - name: smimegw-{name}-nats\n    envs: [{name}.env]\n")
    base = os.path.relpath(KUBERNETES, overlay)
    (overlay / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\n"
        "kind: Kustomization\n"
        "namespace: smimegw\n"
        f"resources:\n  - {base}\n"
        "generatorOptions:\n  disableNameSuffixHash: true\n"
        "secretGenerator:\n" + "".join(generators)
    )
    rendered = subprocess.run(
        ["kubectl", "kustomize", str(overlay)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert rendered.returncode == 0, rendered.stderr
    return rendered.stdout.split("\n---\n")


def test_kubernetes_nats_secret_per_service(tmp_path: Path, nats_users: Path) -> None:
    documents = render_with_nats_secrets(tmp_path / "overlay", nats_users)
    users: dict[str, str] = {}
    deployments: dict[str, str] = {}
    for document in documents:
        name = re.search(r"^  name: (\S+)$", document, re.MULTILINE).group(1)
        if re.search(r"^kind: Secret$", document, re.MULTILINE):
            lines = document.splitlines()
            data = mapping_fields(lines, lines.index("data:"))
            users[name] = base64.b64decode(data["SMIMEGW_NATS__USER"]).decode()
        elif re.search(r"^kind: Deployment$", document, re.MULTILINE):
            deployments[name] = document
        elif re.search(r"^kind: ConfigMap$", document, re.MULTILINE):
            assert "SMIMEGW_NATS__USER" not in document, name
            assert "SMIMEGW_NATS__PASSWORD" not in document, name
    assert set(users) == {f"smimegw-{name}-nats" for name in SERVICE_NAMES}

    readers: dict[str, list[str]] = {secret: [] for secret in users}
    for name in SERVICE_NAMES:
        document = deployments[f"smimegw-{name}"]
        nats_secrets = secrets_referenced(document) & set(users)
        assert nats_secrets == {f"smimegw-{name}-nats"}, name
        assert users[f"smimegw-{name}-nats"] == name
        # A literal env entry would override the Secret's envFrom values.
        assert "name: SMIMEGW_NATS__" not in document, name
        for secret in nats_secrets:
            readers[secret].append(name)
    assert all(len(names) == 1 for names in readers.values()), readers


def test_nats_values_include_users(tmp_path: Path, nats_users: Path) -> None:
    values = (KUBERNETES / "nats-values.yaml").read_text()
    include = re.search(r"^    00\$include: (\S+)$", values, re.MULTILINE).group(1)
    mount = re.search(
        r"^        name: nats-auth\n        mountPath: (\S+)\n", values, re.MULTILINE
    ).group(1)
    assert re.search(
        r"^        name: nats-auth\n        secret:\n"
        r"          secretName: smimegw-nats-auth\n",
        values,
        re.MULTILINE,
    )
    # The chart renders `include PATH;` into /etc/nats-config/nats.conf.
    resolved = posixpath.normpath(posixpath.join("/etc/nats-config", include))
    assert resolved == f"{mount}/nats-auth.json"

    # The same layout under tmp_path: nats-server must load the generated users
    # through the relative include.
    root = tmp_path / "root"
    chart_config = root / "etc" / "nats-config" / "nats.conf"
    chart_config.parent.mkdir(parents=True)
    chart_config.write_text(f'{{\n  "port": 4222,\n  include {include};\n}}\n')
    users_file = root / mount.lstrip("/") / "nats-auth.json"
    users_file.parent.mkdir(parents=True)
    shutil.copyfile(nats_users / "nats-auth.json", users_file)

    checked = subprocess.run(
        [str(embedded.server_binary()), "-t", "-c", str(chart_config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stderr
    assert "is valid" in checked.stdout + checked.stderr
