"""The DNS variant of the Envoy template (Compose, Kubernetes): Envoy accepts it, each
cluster resolves its names (STRICT_DNS), and the loopback rendering is untouched."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from headrace.envoy.render import (
    CLUSTERS,
    EnvoyLayout,
    dns_clusters,
    main,
    parse_dns_target,
    render,
    validate_layout,
)
from headrace.services.launcher.settings import LauncherSettings
from headrace.services.launcher.up import endpoints, envoy_layout
from headrace.services.runtime.tls import CertPaths

K8S_TARGETS = [f"{name}={name}.headrace.svc.cluster.local:50051" for name in CLUSTERS]


def dns_layout(**changes: object) -> EnvoyLayout:
    layout = EnvoyLayout(
        host="0.0.0.0",
        admin_host="127.0.0.1",
        clusters=dns_clusters(K8S_TARGETS),
        descriptor_path="/opt/headrace/public-api.binpb",
    )
    return dataclasses.replace(layout, **changes)  # type: ignore[arg-type]


def clusters_of(text: str) -> dict[str, dict]:
    return {c["name"]: c for c in yaml.safe_load(text)["static_resources"]["clusters"]}


@pytest.mark.parametrize("tls", [False, True], ids=["plaintext", "tls"])
def test_envoy_accepts_the_dns_rendering(tls: bool) -> None:
    layout = dns_layout(tls=CertPaths(Path("/etc/headrace/certs")) if tls else None)
    result = validate_layout(layout)
    assert result.returncode == 0, result.stderr


def test_every_cluster_resolves_its_name_and_only_the_admin_stays_on_loopback() -> None:
    config = yaml.safe_load(render(dns_layout()))
    for name, cluster in clusters_of(render(dns_layout())).items():
        assert cluster["type"] == "STRICT_DNS"
        (endpoint,) = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
        address = endpoint["endpoint"]["address"]["socket_address"]
        assert address == {
            "address": f"{name}.headrace.svc.cluster.local",
            "port_value": 50051,
        }
        # The OpenAI front door speaks HTTP/1.1; every other service gRPC.
        check = "http_health_check" if name == "openai" else "grpc_health_check"
        assert check in cluster["health_checks"][0]
    listeners = {
        listener["name"]: listener["address"]["socket_address"]["address"]
        for listener in config["static_resources"]["listeners"]
    }
    assert listeners == {"public": "0.0.0.0", "internal": "0.0.0.0"}
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"


def test_a_cluster_may_resolve_several_names() -> None:
    clusters = dns_clusters([*K8S_TARGETS, "inference=gpu-inference:50051"])
    text = render(dns_layout(clusters=clusters))
    lb = clusters_of(text)["inference"]["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert [e["endpoint"]["address"]["socket_address"]["address"] for e in lb] == [
        "inference.headrace.svc.cluster.local",
        "gpu-inference",
    ]


def test_the_loopback_rendering_has_no_dns_and_one_host() -> None:
    settings = LauncherSettings(inference_replicas=2)
    text = render(envoy_layout(settings, endpoints(settings)))
    assert "STRICT_DNS" not in text and "dns_refresh_rate" not in text
    assert {c["type"] for c in clusters_of(text).values()} == {"STATIC"}
    assert "0.0.0.0" not in text


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("router:50051", "CLUSTER=HOST:PORT"),
        ("router=router", "CLUSTER=HOST:PORT"),
        ("router=router:http", "CLUSTER=HOST:PORT"),
        ("router=router:70000", "out of range"),
        ("gateway=gw:50051", "unknown cluster"),
    ],
)
def test_a_bad_target_is_refused_with_the_reason(target: str, reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        parse_dns_target(target)


def test_every_cluster_needs_a_target() -> None:
    with pytest.raises(ValueError, match="no --dns target for: cache"):
        dns_clusters([t for t in K8S_TARGETS if not t.startswith("cache=")])


def test_the_command_writes_its_own_invocation_first(tmp_path: Path) -> None:
    out = tmp_path / "envoy.yaml"
    args = ["--admin-port", "9902", *(a for t in K8S_TARGETS for a in ("--dns", t))]
    assert main([*args, "-o", str(out)]) == 0
    first, rest = out.read_text().split("\n", 1)
    assert first.startswith("# Rendered by: headrace envoy render --host 0.0.0.0 ")
    assert "--admin-port 9902" in first and "--dns cache=cache.headrace" in first
    assert rest == render(dns_layout(admin_port=9902, descriptor_path=""))


def test_the_command_refuses_a_missing_cluster(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--dns", "router=router:50051"])
    assert info.value.code == 2
    assert "no --dns target for: auth, sanitizer, cache, inference, openai" in (
        capsys.readouterr().err
    )
