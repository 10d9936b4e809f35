"""A call made while a service is not up gets a message that says so, not Envoy's own
"upstream connect error or disconnect/reset before headers"."""

from __future__ import annotations

import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import grpc
import pytest

from headrace.envoy.render import Cluster, EnvoyLayout, envoy_binary, render
from headrace.router.v1 import router_pb2, router_pb2_grpc
from tests.support.ports import free_port


@pytest.fixture(scope="module")
def envoy_alone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EnvoyLayout]:
    """Envoy with every cluster pointing at a port nothing listens on."""
    layout = EnvoyLayout(
        public_port=free_port(),
        internal_port=free_port(),
        admin_port=free_port(),
        clusters=[
            Cluster(name, [free_port()])
            for name in ("router", "auth", "sanitizer", "cache", "inference", "upstream", "openai")
        ],
    )
    config = tmp_path_factory.mktemp("envoy") / "envoy.yaml"
    config.write_text(render(layout))
    process = subprocess.Popen(
        [envoy_binary(), "-c", str(config), "--disable-hot-restart", "--concurrency", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with urllib.request.urlopen(
                    f"http://127.0.0.1:{layout.admin_port}/listeners", timeout=1
                ) as reply:
                    if "public" in reply.read().decode():
                        break
            except OSError:
                pass
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "Envoy did not start"
            time.sleep(0.1)
        yield layout
    finally:
        process.terminate()
        process.wait(10)


def test_a_grpc_call_before_the_router_is_up_is_unavailable_saying_so(
    envoy_alone: EnvoyLayout,
) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{envoy_alone.public_port}") as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            list(stub.Generate(router_pb2.GenerateRequest(prompt="hi"), timeout=10))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    details = info.value.details() or ""
    assert "the router service is not reachable (starting, or down); retry shortly" in details
    assert "upstream connect error" not in details


def test_an_http_call_before_the_openai_service_is_up_is_503_saying_so(
    envoy_alone: EnvoyLayout,
) -> None:
    request = urllib.request.Request(f"http://127.0.0.1:{envoy_alone.public_port}/v1/models")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(request, timeout=10)
    assert info.value.code == 503
    assert "the openai service is not reachable" in info.value.read().decode()
