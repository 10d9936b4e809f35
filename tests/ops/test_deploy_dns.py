"""Against a running suite: every process listens on loopback only (read from the
kernel's socket tables), and Envoy configured the way Compose and Kubernetes configure
it (STRICT_DNS clusters, `headrace envoy render --dns`) finds the services by name,
serves the public API and the internal routes, and drains on request."""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from headrace.envoy import drain as envoy_drain
from headrace.envoy.render import envoy_binary, public_descriptor_set
from headrace.envoy.render import main as render_main
from headrace.inference.v1 import inference_pb2, inference_pb2_grpc
from headrace.router.v1 import router_pb2, router_pb2_grpc
from headrace.services.runtime import probe
from headrace.types.v1 import types_pb2
from tests.support.ports import free_port_block
from tests.support.suite import RunningSuite, running_suite

pytestmark = pytest.mark.e2e
LISTEN = "0A"


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[RunningSuite]:
    with running_suite(tmp_path_factory.mktemp("home"), tiny_model) as running:
        yield running


def socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().as_posix()
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def listening(inodes: set[str]) -> list[tuple[str, int]]:
    """(address, port) of every listening TCP socket among `inodes`, IPv4 and IPv6."""
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, port = fields[1].split(":")
            if fields[3] != LISTEN or fields[9] not in inodes:
                continue
            raw = bytes.fromhex(address)
            # The kernel prints each 32-bit word in host (little-endian) order.
            words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            ip = ipaddress.ip_address(words)
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped  # a dual-stack socket bound to an IPv4 address
            out.append((str(ip), int(port, 16)))
    return out


def test_every_process_of_the_suite_listens_on_loopback_only(suite: RunningSuite) -> None:
    pids = suite.pids()
    assert {"router", "auth", "sanitizer", "cache", "inference-0", "openai", "envoy"} <= set(pids)
    # The launcher serves its own /metrics (metrics_ports["launcher"]).
    pids["launcher"] = suite.process.pid
    sockets = listening(set().union(*(socket_inodes(pid) for pid in pids.values())))
    ports = {port for _, port in sockets}
    expected = {*suite.service_ports.values(), *suite.metrics_ports.values()}
    expected.add(int(suite.public.rsplit(":", 1)[1]))
    expected.add(int(suite.admin.rsplit(":", 1)[1]))
    assert expected <= ports, f"not found listening: {expected - ports}"
    assert {address for address, _ in sockets} == {"127.0.0.1"}, sockets


@pytest.fixture(scope="module")
def dns_envoy(suite: RunningSuite, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """A second Envoy in front of the suite's services, rendered as for Compose but with
    `localhost` as every service's DNS name."""
    tmp = tmp_path_factory.mktemp("dns-envoy")
    public = free_port_block(3)
    internal, admin = public + 1, public + 2
    router_port = suite.service_ports["router"]
    # The rendered config names one inference service: the suite's single replica.
    ports = {k: v for k, v in suite.service_ports.items() if not k.startswith("inference-")}
    ports["inference"] = suite.service_ports["inference-0"]
    assert ports["inference"] == router_port + 4  # the launcher's offsets
    assert ports["openai"] == router_port + 5  # after the one inference replica
    descriptor = tmp / "public-api.binpb"
    descriptor.write_bytes(public_descriptor_set())
    config = tmp / "envoy.yaml"
    args = ["--host", "127.0.0.1", "--public-port", str(public)]
    args += ["--internal-port", str(internal), "--admin-port", str(admin)]
    args += ["--descriptor", str(descriptor), "-o", str(config)]
    for name, port in ports.items():
        args += ["--dns", f"{name}=localhost:{port}"]
    assert render_main(args) == 0
    assert "type: STRICT_DNS" in config.read_text()
    log = (tmp / "envoy.log").open("wb")
    process = subprocess.Popen(
        [
            envoy_binary(),
            *("-c", str(config), "--disable-hot-restart", "--log-level", "warning"),
            *("--drain-strategy", "immediate", "--drain-time-s", "1"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        clusters = ""
        while time.monotonic() < deadline:
            assert process.poll() is None, (tmp / "envoy.log").read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{admin}/clusters", timeout=2) as r:
                    clusters = r.read().decode()
            except OSError:
                clusters = ""
            healthy = [
                line for line in clusters.splitlines() if line.endswith("::health_flags::healthy")
            ]
            if {line.split("::")[0] for line in healthy} >= set(ports):
                break
            time.sleep(0.2)
        else:
            pytest.fail(f"DNS clusters not healthy in 30 s:\n{clusters}")
        yield {"public": public, "internal": internal, "admin": admin, "clusters": clusters}
    finally:
        process.terminate()
        process.wait(10)
        log.close()


def test_dns_clusters_resolve_the_names_to_the_running_services(
    suite: RunningSuite, dns_envoy: dict
) -> None:
    router_port = suite.service_ports["router"]
    line = f"inference::127.0.0.1:{router_port + 4}::health_flags::healthy"
    assert line in dns_envoy["clusters"]


def test_the_public_api_answers_through_the_dns_envoy(suite: RunningSuite, dns_envoy: dict) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{dns_envoy['public']}") as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        request = router_pb2.GenerateRequest(
            prompt="Hello",
            bypass_cache=True,
            params=types_pb2.SamplingParams(max_tokens=4, temperature=0.0),
        )
        messages = list(
            stub.Generate(
                request, metadata=(("authorization", f"Bearer {suite.token()}"),), timeout=30
            )
        )
    assert messages[-1].usage.completion_tokens == 4


def test_the_internal_listener_reaches_inference_by_name(dns_envoy: dict) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{dns_envoy['internal']}") as channel:
        reply = inference_pb2_grpc.InferenceServiceStub(channel).ListModels(
            inference_pb2.ListModelsRequest(), timeout=10
        )
    assert [m.name for m in reply.models] == ["tiny"]


def test_the_probe_command_reports_health(suite: RunningSuite, dns_envoy: dict) -> None:
    assert probe.main(["grpc", f"127.0.0.1:{suite.service_ports['auth']}"]) == 0
    assert probe.main(["http", f"http://127.0.0.1:{dns_envoy['admin']}/ready"]) == 0
    closed = free_port_block(1)
    assert probe.main(["grpc", f"127.0.0.1:{closed}", "--timeout", "0.5"]) == 1
    assert probe.main(["http", f"http://127.0.0.1:{closed}/ready", "--timeout", "0.5"]) == 1


def test_drain_waits_for_requests_in_flight_then_stops_listening(dns_envoy: dict) -> None:
    """Last in this module: the DNS Envoy is drained."""
    admin = f"127.0.0.1:{dns_envoy['admin']}"
    assert envoy_drain.active_requests(admin) == 0
    # A request in flight: a REST call whose body has not all arrived yet.
    pending = socket.create_connection(("127.0.0.1", dns_envoy["public"]), timeout=5)
    pending.sendall(
        b"POST /headrace.router.v1.RouterService/Generate HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"
    )
    deadline = time.monotonic() + 10
    while envoy_drain.active_requests(admin) != 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    started = time.monotonic()
    assert envoy_drain.drain(admin, timeout=1.0) == 1, "gave up after the timeout"
    assert time.monotonic() - started >= 1.0, "waited for the request"
    pending.close()
    deadline = time.monotonic() + 10
    while envoy_drain.active_requests(admin) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert envoy_drain.active_requests(admin) == 0
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", dns_envoy["public"]), timeout=1).close()
        except ConnectionRefusedError:
            return
        time.sleep(0.2)
    pytest.fail("the public listener still accepts connections after the drain")
