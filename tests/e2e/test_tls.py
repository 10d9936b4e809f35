"""HEADRACE_TLS=true: TLS at Envoy's public listener, mTLS on every internal hop.

The suite writes its certificates itself (`headrace up` does, when missing); clients
verify the gateway with ca.pem; a service and Envoy's internal listener accept only
callers holding a certificate from the suite's CA.
"""

from __future__ import annotations

import ssl
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx2
import openai
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from headrace.inference.v1 import inference_pb2, inference_pb2_grpc
from headrace.router.v1 import router_pb2, router_pb2_grpc
from headrace.services.runtime.tls import CertPaths, make_certs
from headrace.types.v1 import types_pb2
from tests.support.suite import RunningSuite, running_suite

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[RunningSuite]:
    with running_suite(
        tmp_path_factory.mktemp("tls-home"), tiny_model, extra_env={"HEADRACE_TLS": "true"}
    ) as running:
        yield running


@pytest.fixture(scope="module")
def certs(suite: RunningSuite) -> CertPaths:
    return CertPaths(suite.home / "certs")


def health(channel: grpc.Channel) -> int:
    reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    return reply.status


def models(channel: grpc.Channel) -> int:
    """ListModels through Envoy's internal listener (it routes service paths only)."""
    stub = inference_pb2_grpc.InferenceServiceStub(channel)
    return len(stub.ListModels(inference_pb2.ListModelsRequest(), timeout=5).models)


def internal_target(suite: RunningSuite) -> str:
    host, port = suite.public.rsplit(":", 1)
    return f"{host}:{int(port) + 1}"


def test_a_generation_streams_over_tls_verified_with_the_suites_ca(
    suite: RunningSuite, certs: CertPaths
) -> None:
    credentials = grpc.ssl_channel_credentials(certs.ca.read_bytes())
    with grpc.secure_channel(suite.public, credentials) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        request = router_pb2.GenerateRequest(
            prompt="Hello over TLS",
            bypass_cache=True,
            params=types_pb2.SamplingParams(max_tokens=6, temperature=0.0),
        )
        token = suite.token("tls-user")
        messages = list(
            stub.Generate(request, metadata=(("authorization", f"Bearer {token}"),), timeout=30)
        )
    assert messages[-1].finish_reason == types_pb2.FINISH_REASON_LENGTH
    assert messages[-1].usage.completion_tokens == 6


def test_the_openai_api_streams_over_tls_and_mtls_to_its_service(
    suite: RunningSuite, certs: CertPaths
) -> None:
    """HTTPS to Envoy (verified with ca.pem), mTLS from Envoy to the openai service and
    from it back through the internal listener to the router."""
    client = openai.OpenAI(
        base_url=f"https://localhost:{suite.public.rsplit(':', 1)[1]}/v1",
        api_key=suite.token("tls-openai"),
        max_retries=0,
        http_client=httpx2.Client(verify=ssl.create_default_context(cafile=str(certs.ca))),
    )
    chunks = list(
        client.completions.create(model="tiny", prompt="Hello over TLS", max_tokens=4, stream=True)
    )
    assert [c.choices[0].finish_reason for c in chunks if c.choices[0].finish_reason] == ["length"]


def test_the_openai_service_refuses_a_caller_without_the_internal_certificate(
    suite: RunningSuite, certs: CertPaths
) -> None:
    url = f"https://127.0.0.1:{suite.service_ports['openai']}/healthz"
    trusting = ssl.create_default_context(cafile=str(certs.ca))
    with pytest.raises(OSError):
        urllib.request.urlopen(url, timeout=5, context=trusting)
    trusting.load_cert_chain(str(certs.internal), str(certs.internal_key))
    with urllib.request.urlopen(url, timeout=5, context=trusting) as reply:
        assert reply.status == 200


def test_plaintext_to_the_public_listener_fails(suite: RunningSuite) -> None:
    with grpc.insecure_channel(suite.public) as channel, pytest.raises(grpc.RpcError) as info:
        health(channel)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_client_that_does_not_trust_the_ca_is_refused(
    suite: RunningSuite, tmp_path: Path
) -> None:
    other = CertPaths(tmp_path / "other")
    make_certs(other)
    credentials = grpc.ssl_channel_credentials(other.ca.read_bytes())
    with grpc.secure_channel(suite.public, credentials) as channel, pytest.raises(grpc.RpcError):
        health(channel)


@pytest.mark.parametrize("where", ["auth service", "internal listener"])
def test_internal_hops_need_a_client_certificate_from_the_suites_ca(
    suite: RunningSuite, certs: CertPaths, tmp_path: Path, where: str
) -> None:
    if where == "auth service":
        target, call = f"127.0.0.1:{suite.service_ports['auth']}", health
    else:
        target, call = internal_target(suite), models
    # No client certificate (but trusting the server): refused in the handshake.
    server_only = grpc.ssl_channel_credentials(certs.ca.read_bytes())
    with grpc.secure_channel(target, server_only) as channel, pytest.raises(grpc.RpcError) as info:
        call(channel)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    # A client certificate from another CA: refused.
    other = CertPaths(tmp_path / "other")
    make_certs(other)
    forged = grpc.ssl_channel_credentials(
        certs.ca.read_bytes(), other.internal_key.read_bytes(), other.internal.read_bytes()
    )
    with grpc.secure_channel(target, forged) as channel, pytest.raises(grpc.RpcError) as info:
        call(channel)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    # Plaintext: refused.
    with grpc.insecure_channel(target) as channel, pytest.raises(grpc.RpcError) as info:
        call(channel)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    # The suite's own internal certificate: served.
    mutual = grpc.ssl_channel_credentials(
        certs.ca.read_bytes(), certs.internal_key.read_bytes(), certs.internal.read_bytes()
    )
    with grpc.secure_channel(target, mutual) as channel:
        assert call(channel) == (
            health_pb2.HealthCheckResponse.SERVING if where == "auth service" else 1
        )


def test_the_cli_speaks_tls_with_headrace_ca_cert(suite: RunningSuite, certs: CertPaths) -> None:
    import subprocess
    import sys

    out = subprocess.run(
        [
            str(Path(sys.executable).parent / "headrace"),
            "generate",
            "Hello from the CLI",
            "--max-tokens",
            "3",
            "--target",
            suite.public,
        ],
        env={**suite.env, "HEADRACE_CA_CERT": str(certs.ca)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
