"""What the deployment tests share: the manifests as Kubernetes would get them, the
settings class behind each service's command, and settings loaded as a container
would load them (its environment, its mounted headrace.toml)."""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from headrace.services.auth.settings import AuthSettings
from headrace.services.cache.settings import CacheSettings
from headrace.services.inference.settings import InferenceSettings
from headrace.services.openai.settings import OpenAISettings
from headrace.services.router.settings import RouterSettings
from headrace.services.runtime.settings import HeadraceSettings, ServiceSettings
from headrace.services.sanitizer.settings import SanitizerSettings
from headrace.services.upstream.settings import UpstreamSettings
from tests.support.suite import REPO

DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
KUBECTL = shutil.which("kubectl")

SETTINGS: dict[str, type[ServiceSettings]] = {
    "router": RouterSettings,
    "auth": AuthSettings,
    "sanitizer": SanitizerSettings,
    "cache": CacheSettings,
    "inference": InferenceSettings,
    "openai": OpenAISettings,
    "upstream": UpstreamSettings,
}
"""The settings class of each service, by the name in `python -m headrace.services.<name>`."""

SERVICE_MODULE = re.compile(r"^headrace\.services\.(\w+)$")


def service_of(command: list[str]) -> str | None:
    """The service a container command runs (`python -m headrace.services.X`), or None."""
    if len(command) >= 3 and command[1] == "-m":
        match = SERVICE_MODULE.match(command[2])
        if match and match.group(1) in SETTINGS:
            return match.group(1)
    return None


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize` of a directory: the objects `kubectl apply -k` would send."""
    assert KUBECTL is not None
    out = subprocess.run(
        [KUBECTL, "kustomize", str(directory)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def load_base_without_kustomize(directory: Path) -> list[dict[str, Any]]:
    """The base's objects read from its files as kustomize would assemble them, for
    machines without kubectl: the resources, the generated ConfigMaps and Secrets (names
    without kustomize's hash suffix), the namespace. No patches: a base has none."""
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    assert not spec.get("patches"), "patches need real kustomize"
    objects: list[dict[str, Any]] = []
    for resource in spec["resources"]:
        objects += [d for d in yaml.safe_load_all((directory / resource).read_text()) if d]
    for generator in spec.get("configMapGenerator", []):
        data = {Path(f).name: (directory / f).read_text() for f in generator["files"]}
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": generator["name"]},
                "data": data,
            }
        )
    for generator in spec.get("secretGenerator", []):
        data = {}
        for env_file in generator.get("envs", []):
            for line in (directory / env_file).read_text().splitlines():
                if line.strip() and not line.startswith("#"):
                    key, _, value = line.partition("=")
                    data[key] = base64.b64encode(value.encode()).decode()
        objects.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "Opaque",
                "metadata": {"name": generator["name"]},
                "data": data,
            }
        )
    for obj in objects:
        if obj["kind"] != "Namespace":
            obj["metadata"]["namespace"] = spec["namespace"]
    return objects


def manifests(directory: Path) -> list[dict[str, Any]]:
    """A kustomization's objects: real kustomize where kubectl is installed."""
    return kustomize(directory) if KUBECTL else load_base_without_kustomize(directory)


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def named(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    """The one object of a kind whose name is `name`, or `name` with kustomize's suffix."""
    found = [
        o
        for o in of_kind(objects, kind)
        if re.fullmatch(rf"{re.escape(name)}(-[a-z0-9]{{10}})?", o["metadata"]["name"])
    ]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def workloads(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in ("Deployment", "StatefulSet")]


def containers(objects: list[dict[str, Any]]) -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, container) for every container of every workload."""
    for workload in workloads(objects):
        for container in workload["spec"]["template"]["spec"]["containers"]:
            yield workload, container


def mounted_file(objects: list[dict[str, Any]], workload: dict[str, Any], path: str) -> str:
    """The text a container of `workload` reads at `path`, from the ConfigMap mounted there."""
    pod = workload["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    for container in pod["containers"]:
        for mount in container.get("volumeMounts", []):
            root = mount["mountPath"].rstrip("/")
            if path.startswith(root + "/") and "configMap" in volumes[mount["name"]]:
                config = named(objects, "ConfigMap", volumes[mount["name"]]["configMap"]["name"])
                key = mount.get("subPath") or path[len(root) + 1 :]
                return config["data"][key]
    raise AssertionError(f"{workload['metadata']['name']}: nothing mounted at {path}")


def container_env(objects: list[dict[str, Any]], container: dict[str, Any]) -> dict[str, str]:
    """A container's environment as the kubelet builds it: Secret references read, and
    $(VAR) expanded from variables defined earlier (an undefined one is an error here,
    though Kubernetes would leave it as it is)."""
    env: dict[str, str] = {}
    for var in container.get("env", []):
        if "valueFrom" in var:
            ref = var["valueFrom"]["secretKeyRef"]
            secret = named(objects, "Secret", ref["name"])
            env[var["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
            continue

        def expand(match: re.Match[str], name: str = var["name"]) -> str:
            assert match.group(1) in env, (
                f"{name} refers to $({match.group(1)}), not defined before it"
            )
            return env[match.group(1)]

        env[var["name"]] = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", expand, var.get("value", ""))
    return env


@contextlib.contextmanager
def process_environment(env: dict[str, str], config_text: str | None, tmp: Path) -> Iterator[None]:
    """os.environ as a container's: no HEADRACE_* of ours, `env`, and HEADRACE_CONFIG
    pointing at a copy of `config_text` (or at nothing)."""
    saved = dict(os.environ)
    try:
        for key in [k for k in os.environ if k.startswith("HEADRACE_")]:
            del os.environ[key]
        os.environ.update(env)
        config = tmp / "headrace.toml"
        if config_text is not None:
            config.write_text(config_text)
        os.environ["HEADRACE_CONFIG"] = str(config if config_text is not None else tmp / "none")
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def settings_fields(cls: type[HeadraceSettings]) -> set[str]:
    return set(cls.model_fields)


def check_toml_keys(text: str) -> None:
    """Every key of a headrace.toml is a field of a service that reads it: top-level keys
    of some service, a [service] table's keys of that service (settings ignore unknown
    keys, so a typo would go unnoticed)."""
    data = tomllib.loads(text)
    every = set().union(*(settings_fields(c) for c in SETTINGS.values()))
    for key, value in data.items():
        if isinstance(value, dict):
            assert key in SETTINGS, f"[{key}]: no such service"
            unknown = set(value) - settings_fields(SETTINGS[key])
            assert not unknown, f"[{key}] keys that {key} has no setting for: {unknown}"
        else:
            assert key in every, f"top-level key {key!r} is no service's setting"


def check_env_names(service: str, env: dict[str, str]) -> None:
    """Every HEADRACE_* variable names a setting of the service (HEADRACE_CONFIG names
    the settings file)."""
    fields = settings_fields(SETTINGS[service])
    for name in env:
        if name.startswith("HEADRACE_") and name != "HEADRACE_CONFIG":
            assert name.removeprefix("HEADRACE_").lower() in fields, (
                f"{service}: {name} is no setting of {SETTINGS[service].__name__}"
            )


def rendered_again(config_text: str, tmp: Path) -> str:
    """Run the command in a rendered Envoy config's first line again; its output."""
    first = config_text.splitlines()[0]
    assert first.startswith("# Rendered by: headrace envoy render "), first
    args = shlex.split(first.removeprefix("# Rendered by: "))[3:]
    out = tmp / "envoy.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "headrace.envoy.render", *args, "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp,
    )
    assert result.returncode == 0, result.stderr
    return out.read_text()


def render_args(config_text: str) -> dict[str, list[str]]:
    """The options of the command in a rendered config's first line, by name."""
    args = shlex.split(config_text.splitlines()[0].removeprefix("# Rendered by: "))[3:]
    options: dict[str, list[str]] = {}
    for flag, value in zip(args[::2], args[1::2], strict=True):
        options.setdefault(flag.removeprefix("--"), []).append(value)
    return options
