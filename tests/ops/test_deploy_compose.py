"""deploy/compose.yaml, checked offline (no Docker needed): against the Compose
Specification's JSON schema, vendored as compose-spec.schema.json from
https://github.com/compose-spec/compose-spec/blob/170098ba07d9f53c383a41bfd4c5166b0a4529a6/schema/compose-spec.json
(Apache License 2.0, Copyright The Compose Specification Authors), and cross-checked with
the code: every service is one of ours with real settings, Envoy's config is the
renderer's and names the Compose services, stop periods cover the drain."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import jsonschema
import pytest
import yaml

from tests.ops.deploy_support import (
    DEPLOY,
    SETTINGS,
    check_env_names,
    check_toml_keys,
    process_environment,
    render_args,
    rendered_again,
    service_of,
)

COMPOSE = DEPLOY / "compose.yaml"
SCHEMA = Path(__file__).with_name("compose-spec.schema.json")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def schema_errors(document: dict[str, Any]) -> list[str]:
    validator = jsonschema.Draft7Validator(json.loads(SCHEMA.read_text()))
    return [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(document)]


def mounted(service: dict[str, Any], target: str) -> Path:
    """The host file mounted at `target` (relative paths are from deploy/)."""
    for volume in service["volumes"]:
        source, _, rest = volume.partition(":")
        if rest.split(":")[0] == target:
            return (DEPLOY / source).resolve()
    raise AssertionError(f"nothing mounted at {target}")


def seconds(duration: str) -> float:
    match = re.fullmatch(r"(\d+)s", duration)
    assert match, duration
    return float(match.group(1))


def test_the_compose_file_matches_the_compose_specification(compose: dict[str, Any]) -> None:
    assert schema_errors(compose) == []


def test_the_schema_check_rejects_a_misspelt_key(compose: dict[str, Any]) -> None:
    broken = copy.deepcopy(compose)
    broken["services"]["router"]["stop_grace_priod"] = "75s"
    assert schema_errors(broken)


def test_every_piece_is_there_with_two_inference_replicas(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {
        "redis",
        "rabbitmq",
        "router",
        "auth",
        "sanitizer",
        "cache",
        "inference",
        "openai",
        "upstream",
        "envoy",
    }
    assert services["inference"]["deploy"]["replicas"] == 2
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no healthcheck"
        command = service.get("command", [])
        if command[:2] == ["python", "-m"]:
            assert importlib.util.find_spec(command[2]) is not None, command
            assert service_of(command) == name
        for probe in (service["healthcheck"]["test"],):
            if probe[1:4] == ["python", "-m", "headrace.services.runtime.probe"]:
                assert importlib.util.find_spec(probe[3]) is not None


def test_only_envoys_public_listener_is_published_and_on_loopback(
    compose: dict[str, Any],
) -> None:
    published = {name: s["ports"] for name, s in compose["services"].items() if "ports" in s}
    assert published == {"envoy": ["127.0.0.1:8080:8080"]}


def test_settings_the_containers_load_are_the_intended_ones(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    services = compose["services"]
    envoy_options = render_args(mounted(services["envoy"], "/etc/headrace/envoy.yaml").read_text())
    for name in SETTINGS:
        service = services[name]
        env = {k: str(v) for k, v in service.get("environment", {}).items()}
        check_env_names(name, env)
        toml = mounted(service, env["HEADRACE_CONFIG"]).read_text()
        check_toml_keys(toml)
        with process_environment(env, toml, tmp_path):
            settings = SETTINGS[name]()
        host, port = settings.internal_target.rsplit(":", 1)
        assert host == "envoy" and port == envoy_options["internal-port"][0]
        for url in [getattr(settings, "redis_url", None), getattr(settings, "rabbitmq_url", None)]:
            if url:
                parsed = urlparse(url)
                assert parsed.hostname in services, url
        if name == "router":
            rabbit = services["rabbitmq"]["environment"]
            parsed = urlparse(settings.rabbitmq_url)
            assert (parsed.username, parsed.password) == (
                rabbit["RABBITMQ_DEFAULT_USER"],
                rabbit["RABBITMQ_DEFAULT_PASS"],
            )
        # grace_seconds for in-flight streams, then closing: within the stop period.
        assert seconds(service["stop_grace_period"]) >= settings.grace_seconds + 5, name
        probe = service["healthcheck"]["test"]
        if name == "openai":  # an HTTP service: its probe GETs /healthz
            assert probe[-2:] == ["http", f"http://127.0.0.1:{settings.port}/healthz"]
        else:
            assert probe[-1] == f"127.0.0.1:{settings.port}"


def test_envoys_config_is_the_renderers_and_names_the_compose_services(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    services = compose["services"]
    config = mounted(services["envoy"], "/etc/headrace/envoy.yaml").read_text()
    assert config == rendered_again(config, tmp_path), (
        "compose/envoy.yaml is stale: run the command in its first line again"
    )
    options = render_args(config)
    for target in options["dns"]:
        cluster, _, address = target.partition("=")
        assert address == f"{cluster}:{SETTINGS[cluster].model_fields['port'].default}"
        assert cluster in services
    assert services["envoy"]["ports"] == [f"127.0.0.1:8080:{options['public-port'][0]}"]
    assert options["admin-host"] == ["127.0.0.1"]
    assert services["envoy"]["healthcheck"]["test"][-1] == (
        f"http://127.0.0.1:{options['admin-port'][0]}/ready"
    )
