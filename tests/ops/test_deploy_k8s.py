"""The Kubernetes manifests (deploy/k8s), checked offline: every object against the
Kubernetes API schemas (kubernetes-validate's copies, strict: unknown fields are errors)
for the oldest and newest versions we support, the base and the GPU overlay as
`kubectl kustomize` builds them, and cross-checks that catch what a schema cannot:
selectors that select nothing, ports and settings that disagree with the code, a
rendered Envoy config that is stale, grace periods shorter than the services' drain."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import kubernetes_validate
import pytest
import yaml

from headrace.services.runtime.settings import ServiceSettings
from tests.ops.deploy_support import (
    K8S,
    KUBECTL,
    SETTINGS,
    check_env_names,
    check_toml_keys,
    container_env,
    containers,
    kustomize,
    load_base_without_kustomize,
    manifests,
    mounted_file,
    named,
    of_kind,
    process_environment,
    render_args,
    rendered_again,
    service_of,
    workloads,
)
from tests.support.suite import REPO

# gRPC probes are GA from 1.27; kubernetes-validate 1.37 ships schemas up to 1.37.
K8S_VERSIONS = ("1.27", "1.37")
BASE = K8S / "base"
GPU = K8S / "overlays" / "gpu"
needs_kubectl = pytest.mark.skipif(
    KUBECTL is None, reason="kubectl not installed (kustomize builds the overlay)"
)
CLUSTER_DOMAIN = "svc.cluster.local"


@pytest.fixture(scope="module")
def base() -> list[dict[str, Any]]:
    return manifests(BASE)


@pytest.fixture(scope="module")
def gpu() -> list[dict[str, Any]]:
    if KUBECTL is None:
        pytest.skip("kubectl not installed (kustomize builds the overlay)")
    return kustomize(GPU)


@pytest.fixture(scope="module", params=["base", "gpu"])
def variant(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return request.getfixturevalue(request.param)


def namespace(objects: list[dict[str, Any]]) -> str:
    (ns,) = of_kind(objects, "Namespace")
    return ns["metadata"]["name"]


def headrace_containers(objects: list[dict[str, Any]]):
    for workload, container in containers(objects):
        service = service_of(container.get("command", []))
        if service is not None:
            yield workload, container, service


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_object_matches_the_kubernetes_schema(
    variant: list[dict[str, Any]], version: str
) -> None:
    assert len(variant) > 20
    for obj in variant:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']} {obj['metadata']['name']} ({version}): {exc.message}")


def test_the_schema_check_rejects_a_misspelt_field(base: list[dict[str, Any]]) -> None:
    deployment = named(base, "Deployment", "router")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    broken["spec"]["template"]["spec"]["terminationGracePeriod"] = 80
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[0], strict=True)


@needs_kubectl
def test_the_base_reads_the_same_without_kubectl() -> None:
    """The fallback for machines without kubectl assembles what kustomize assembles."""

    def names(objects: list[dict[str, Any]]) -> set[tuple[str, str, str]]:
        return {
            (
                o["kind"],
                re.sub(r"-[a-z0-9]{10}$", "", o["metadata"]["name"])
                if o["kind"] in ("ConfigMap", "Secret")
                else o["metadata"]["name"],
                o["metadata"].get("namespace", ""),
            )
            for o in objects
        }

    built, read = kustomize(BASE), load_base_without_kustomize(BASE)
    assert names(built) == names(read)
    for kind in ("ConfigMap", "Secret"):
        for obj in of_kind(read, kind):
            assert named(built, kind, obj["metadata"]["name"])["data"] == obj["data"]


def test_every_service_selects_the_pods_of_one_workload_on_named_ports(
    variant: list[dict[str, Any]],
) -> None:
    for service in of_kind(variant, "Service"):
        selector = service["spec"]["selector"]
        selected = [
            w
            for w in workloads(variant)
            if selector.items() <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        name = service["metadata"]["name"]
        assert len(selected) == 1, f"Service {name} selects {len(selected)} workloads"
        pod_ports = {
            p["name"]: p["containerPort"]
            for c in selected[0]["spec"]["template"]["spec"]["containers"]
            for p in c.get("ports", [])
        }
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in pod_ports, f"{name}: no container port {port}"


def test_every_workload_selector_matches_its_own_pods(variant: list[dict[str, Any]]) -> None:
    for workload in workloads(variant):
        labels = workload["spec"]["template"]["metadata"]["labels"]
        assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_autoscalers_and_disruption_budgets_point_at_real_workloads(
    variant: list[dict[str, Any]],
) -> None:
    deployments = {d["metadata"]["name"]: d for d in of_kind(variant, "Deployment")}
    scaled = {
        h["spec"]["scaleTargetRef"]["name"] for h in of_kind(variant, "HorizontalPodAutoscaler")
    }
    assert scaled == {"router", "inference"}
    for name in scaled:
        assert name in deployments
        # The autoscaler owns the count: a replicas field would reset it on every apply.
        assert "replicas" not in deployments[name]["spec"]
    for budget in of_kind(variant, "PodDisruptionBudget"):
        selector = budget["spec"]["selector"]["matchLabels"]
        assert any(
            selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
            for d in deployments.values()
        )
    assert any(
        b["metadata"]["name"] == "inference" for b in of_kind(variant, "PodDisruptionBudget")
    )


def test_each_service_runs_once_with_ports_and_probes_on_the_settings_defaults(
    base: list[dict[str, Any]],
) -> None:
    seen = [service for _, _, service in headrace_containers(base)]
    assert sorted(seen) == sorted(SETTINGS)
    for workload, container, service in headrace_containers(base):
        defaults = SETTINGS[service].model_fields
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        serving = "http" if service == "openai" else "grpc"  # the OpenAI API is HTTP/1.1
        assert ports == {
            serving: defaults["port"].default,
            "metrics": defaults["metrics_port"].default,
        }
        for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
            if probe in container and serving == "http":
                check = container[probe]["httpGet"]
                assert check == {"path": "/healthz", "port": ports["http"]}, (service, probe)
            elif probe in container:
                # gRPC health of the whole server ("" is set SERVING once all are).
                assert container[probe]["grpc"]["port"] == ports["grpc"], (service, probe)
        assert "readinessProbe" in container and "livenessProbe" in container
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(ports["metrics"])


def test_settings_the_containers_load_are_the_intended_ones(
    base: list[dict[str, Any]], tmp_path: Path
) -> None:
    """Each service's settings loaded as its container loads them (its env, the ConfigMap
    mounted where HEADRACE_CONFIG points): names are real settings, values parse, and the
    addresses in them name Services of this deployment on the right ports."""
    ns = namespace(base)
    services = {s["metadata"]["name"]: s for s in of_kind(base, "Service")}

    def service_port(host: str, port: int) -> None:
        name, _, rest = host.partition(".")
        assert rest == f"{ns}.{CLUSTER_DOMAIN}", f"{host}: not a Service name in {ns}"
        assert name in services, f"{host}: no Service {name}"
        assert port in {p["port"] for p in services[name]["spec"]["ports"]}, f"{host}:{port}"

    for workload, container, service in headrace_containers(base):
        env = container_env(base, container)
        check_env_names(service, env)
        toml = mounted_file(base, workload, env["HEADRACE_CONFIG"])
        check_toml_keys(toml)
        with process_environment(env, toml, tmp_path):
            settings = SETTINGS[service]()
        host, port = settings.internal_target.rsplit(":", 1)
        service_port(host, int(port))
        assert host.startswith("envoy-internal."), "services call Envoy's internal listener"
        for url in [getattr(settings, "redis_url", None), getattr(settings, "rabbitmq_url", None)]:
            if url:
                parsed = urlparse(url)
                service_port(parsed.hostname or "", parsed.port or 0)
        if service == "router":
            assert urlparse(settings.rabbitmq_url).username == "headrace"


def test_inference_threads_fit_the_cpu_limit(variant: list[dict[str, Any]], tmp_path: Path) -> None:
    """llama.cpp starts one thread per core of the node unless told: the model's threads
    must not exceed the container's CPU limit (it would be throttled)."""
    for workload, container, service in headrace_containers(variant):
        if service != "inference":
            continue
        env = container_env(variant, container)
        with process_environment(
            env, mounted_file(variant, workload, env["HEADRACE_CONFIG"]), tmp_path
        ):
            settings = SETTINGS["inference"]()
        limit = float(str(container["resources"]["limits"]["cpu"]).removesuffix("m")) / (
            1000 if str(container["resources"]["limits"]["cpu"]).endswith("m") else 1
        )
        for model in settings.models:
            assert model.threads is not None and model.threads <= limit, model


def test_termination_grace_covers_the_pause_and_the_drain(
    variant: list[dict[str, Any]], tmp_path: Path
) -> None:
    for workload, container, service in headrace_containers(variant):
        env = container_env(variant, container)
        with process_environment(
            env, mounted_file(variant, workload, env["HEADRACE_CONFIG"]), tmp_path
        ):
            settings: ServiceSettings = SETTINGS[service]()
        pre_stop = container["lifecycle"]["preStop"]["exec"]["command"]
        assert pre_stop[0] == "sleep"
        grace = workload["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        assert grace >= int(pre_stop[1]) + settings.grace_seconds + 5, service
    envoy = named(variant, "Deployment", "envoy")
    pod = envoy["spec"]["template"]["spec"]
    drain = pod["containers"][0]["lifecycle"]["preStop"]["exec"]["command"]
    assert drain[:3] == ["python", "-m", "headrace.envoy.drain"]
    assert pod["terminationGracePeriodSeconds"] > float(drain[drain.index("--timeout") + 1])


def test_pods_run_as_the_images_user_without_privileges(variant: list[dict[str, Any]]) -> None:
    for workload, container in containers(variant):
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        if container["image"].startswith("headrace:"):
            assert pod["securityContext"]["runAsUser"] == 10001  # USER in deploy/Dockerfile
            assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_the_images_are_this_version(variant: list[dict[str, Any]]) -> None:
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    images = {c["image"] for _, c in containers(variant) if c["image"].startswith("headrace")}
    assert images <= {f"headrace:{version}", f"headrace:{version}-cuda"}, images


def test_only_the_gpu_overlay_asks_for_gpus_and_scales_on_inference_load(
    base: list[dict[str, Any]], gpu: list[dict[str, Any]]
) -> None:
    def inference(objects: list[dict[str, Any]]) -> dict[str, Any]:
        return named(objects, "Deployment", "inference")["spec"]["template"]["spec"]

    def gpus(objects: list[dict[str, Any]]) -> list[object]:
        return [
            c["resources"][side].get("nvidia.com/gpu")
            for _, c in containers(objects)
            for side in ("requests", "limits")
        ]

    assert not any(gpus(base))
    (container,) = inference(gpu)["containers"]
    assert container["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["image"].endswith("-cuda")
    assert sum(1 for g in gpus(gpu) if g) == 2, "only inference gets a GPU"
    metrics = named(gpu, "HorizontalPodAutoscaler", "inference")["spec"]["metrics"]
    names = {m["pods"]["metric"]["name"] for m in metrics}
    assert names == {"headrace_inference_queue_depth", "headrace_inference_busy_slots"}
    source = (REPO / "services" / "inference" / "metrics.py").read_text()
    for name in names:
        assert f'"{name}"' in source, f"{name} is not a metric inference exports"


def test_envoys_config_is_the_renderers_and_names_the_headless_services(
    base: list[dict[str, Any]], tmp_path: Path
) -> None:
    envoy = named(base, "Deployment", "envoy")
    (container,) = envoy["spec"]["template"]["spec"]["containers"]
    config_path = container["command"][container["command"].index("-c") + 1]
    config = mounted_file(base, envoy, config_path)
    assert config == rendered_again(config, tmp_path), (
        "config/envoy.yaml is stale: run the command in its first line again"
    )
    options = render_args(config)
    ns = namespace(base)
    services = {s["metadata"]["name"]: s for s in of_kind(base, "Service")}
    for target in options["dns"]:
        cluster, _, address = target.partition("=")
        host, port = address.rsplit(":", 1)
        assert host == f"{cluster}.{ns}.{CLUSTER_DOMAIN}"
        service = services[cluster]
        # Headless, so the name resolves to every ready pod, not one virtual IP.
        assert service["spec"].get("clusterIP") == "None", cluster
        assert int(port) in {p["port"] for p in service["spec"]["ports"]}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {
        "public": int(options["public-port"][0]),
        "internal": int(options["internal-port"][0]),
    }
    assert options["admin-host"] == ["127.0.0.1"], "Envoy's admin stays on the pod's loopback"
    assert options["descriptor"] == ["/opt/headrace/public-api.binpb"]  # written by the Dockerfile
    public = services["envoy"]["spec"]["ports"]
    internal = services["envoy-internal"]["spec"]["ports"]
    assert [p["targetPort"] for p in public] == ["public"]
    assert [p["targetPort"] for p in internal] == ["internal"]


def test_the_signing_keys_secret_is_mounted_where_auth_reads_keys_and_documented(
    base: list[dict[str, Any]],
) -> None:
    auth = named(base, "Deployment", "auth")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in auth["volumes"]}
    (mount,) = [m for m in auth["containers"][0]["volumeMounts"] if "secret" in volumes[m["name"]]]
    # KeyStore(settings.home / "keys"); the image's HEADRACE_HOME is /var/lib/headrace.
    assert mount["mountPath"] == "/var/lib/headrace/keys" and mount["readOnly"] is True
    secret = volumes[mount["name"]]["secret"]["secretName"]
    assert f"create secret generic {secret}" in (REPO / "docs" / "scaling.md").read_text()


def test_network_policies_open_only_the_listed_ports(base: list[dict[str, Any]]) -> None:
    policies = {p["metadata"]["name"]: p for p in of_kind(base, "NetworkPolicy")}
    assert policies["default-deny-ingress"]["spec"] == {
        "podSelector": {},
        "policyTypes": ["Ingress"],
    }
    opened = {
        port["port"]
        for policy in policies.values()
        for rule in policy["spec"].get("ingress", [])
        for port in rule.get("ports", [])
    }
    assert opened == {8080, 8081, 50051, 9460, 6379, 5672}
    (internal_rule,) = [
        r for r in policies["envoy"]["spec"]["ingress"] if r["ports"] == [{"port": 8081}]
    ]
    assert "from" in internal_rule, "Envoy's internal listener is not open to everyone"
