"""The Envoy template renders to a config that Envoy itself accepts."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from headrace.envoy.render import Cluster, EnvoyLayout, render, validate
from headrace.services.launcher.settings import LauncherSettings
from headrace.services.launcher.up import endpoints, envoy_layout


def layout(replicas: int) -> EnvoyLayout:
    settings = LauncherSettings(inference_replicas=replicas)
    return envoy_layout(settings, endpoints(settings))


@pytest.mark.parametrize("replicas", [1, 3])
def test_rendered_config_passes_envoy_validate(tmp_path: Path, replicas: int) -> None:
    config = tmp_path / "envoy.yaml"
    config.write_text(render(layout(replicas)))
    result = validate(config)
    assert result.returncode == 0, result.stderr


def test_default_ports_match_the_pinned_contract() -> None:
    text = render(layout(1))
    assert "port_value: 8080" in text  # public gRPC
    assert "port_value: 9901" in text  # admin


def test_inference_cluster_has_every_replica_least_request_health_and_outliers() -> None:
    text = render(layout(3))
    inference = text[text.index("- name: inference") :]
    assert "lb_policy: LEAST_REQUEST" in inference
    assert "grpc_health_check" in inference
    assert "outlier_detection" in inference
    settings = LauncherSettings(inference_replicas=3)
    for ep in endpoints(settings):
        if ep.name.startswith("inference"):
            assert f"port_value: {ep.port}" in inference


def test_internal_listener_routes_each_service_by_path() -> None:
    text = render(
        EnvoyLayout(
            clusters=[
                Cluster(n, [1]) for n in ("router", "auth", "sanitizer", "cache", "inference")
            ]
        )
    )
    internal = text[text.index("- name: internal") : text.index("clusters:")]
    for service, cluster in [
        ("headrace.auth.v1.AuthService", "auth"),
        ("headrace.sanitizer.v1.SanitizerService", "sanitizer"),
        ("headrace.cache.v1.CacheService", "cache"),
        ("headrace.inference.v1.InferenceService", "inference"),
    ]:
        assert f'prefix: "/{service}/"' in internal
        assert f"cluster: {cluster}" in internal
    public = text[text.index("- name: public") : text.index("- name: internal")]
    for internal_only in ("Authorize", "RecordUsage", "GetJwks"):
        assert f"AuthService/{internal_only}" not in public
    for internal_only in ("CacheService/Lookup", "CacheService/Store"):
        assert internal_only not in public
    for internal_service in ("SanitizerService", "InferenceService"):
        assert internal_service not in public, "internal services must not be public"


def test_a_broken_config_is_rejected_by_validate(tmp_path: Path) -> None:
    config = tmp_path / "envoy.yaml"
    config.write_text(render(layout(1)).replace("LEAST_REQUEST", "NO_SUCH_POLICY"))
    assert validate(config).returncode != 0


def test_the_public_listener_sends_v1_to_the_openai_service_over_http1() -> None:
    config = yaml.safe_load(render(layout(1)))
    public, internal = config["static_resources"]["listeners"]
    routes = public["filter_chains"][0]["filters"][0]["typed_config"]["route_config"][
        "virtual_hosts"
    ][0]["routes"]
    v1 = [r for r in routes if r["match"].get("prefix") == "/v1/"]
    assert [r["route"]["cluster"] for r in v1] == ["openai"]
    assert v1[0]["route"]["timeout"] == "0s", "streams last as long as the generation"
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    options = clusters["openai"]["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
    ]["explicit_http_config"]
    assert "http_protocol_options" in options and "http2_protocol_options" not in options
    assert clusters["openai"]["health_checks"][0]["http_health_check"] == {"path": "/healthz"}
    inner = internal["filter_chains"][0]["filters"][0]["typed_config"]["route_config"][
        "virtual_hosts"
    ][0]["routes"]
    router = [r for r in inner if r["match"]["prefix"] == "/headrace.router.v1.RouterService/"]
    assert [r["route"]["cluster"] for r in router] == ["router"]
