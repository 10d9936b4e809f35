"""Start the whole suite (`python -m headrace.services.launcher`) on free ports.

Used by the end-to-end tests: real service processes, real Envoy, a tiny model.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.ports import free_port_block

REPO = Path(__file__).resolve().parents[2]


@dataclass
class RunningSuite:
    """A started suite and where to reach it."""

    home: Path
    env: dict[str, str]
    public: str
    admin: str
    process: subprocess.Popen[bytes]
    log_path: Path
    service_ports: dict[str, int] = field(default_factory=dict)
    metrics_ports: dict[str, int] = field(default_factory=dict)

    def metric(self, service: str, name: str, /, **labels: str) -> float:
        """One sample from a service's /metrics (0 when absent)."""
        from prometheus_client.parser import text_string_to_metric_families

        url = f"http://127.0.0.1:{self.metrics_ports[service]}/metrics"
        with urllib.request.urlopen(url, timeout=5) as reply:
            text = reply.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return sample.value
        return 0.0

    def rpcs_started(self, process: str, grpc_service: str, grpc_method: str) -> float:
        """How many calls of one RPC a service process has started (its grpc metrics)."""
        return self.metric(
            process,
            "grpc_server_started_total",
            grpc_service=grpc_service,
            grpc_method=grpc_method,
        )

    @property
    def openai_url(self) -> str:
        """The OpenAI-compatible API's base URL, through Envoy's public listener."""
        return f"http://{self.public}/v1"

    def pid(self, name: str) -> int:
        return int((self.home / "run" / f"{name}.pid").read_text())

    def pids(self) -> dict[str, int]:
        return {p.stem: int(p.read_text()) for p in (self.home / "run").glob("*.pid")}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def token(self, subject: str = "tester", *extra: str) -> str:
        out = subprocess.run(
            [
                str(Path(sys.executable).parent / "headrace"),
                "token",
                "issue",
                "--subject",
                subject,
                *extra,
            ],
            env=self.env,
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
        return out.stdout.strip().splitlines()[-1]

    def stop(self, timeout: float = 30.0) -> int:
        try:
            return self._stop(timeout)
        finally:
            delete_test_queue(self.env.get("HEADRACE_BATCH_QUEUE", ""))

    def _stop(self, timeout: float) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        return self.process.returncode


def delete_test_queue(name: str) -> None:
    """Remove a suite's own durable batch queue from the shared broker (best effort)."""
    if not name.startswith("headrace.test."):
        return
    import asyncio

    import aio_pika

    async def delete() -> None:
        connection = await aio_pika.connect("amqp://guest:guest@127.0.0.1:5672/", timeout=2)
        async with connection:
            channel = await connection.channel()
            await channel.queue_delete(name)

    try:
        asyncio.run(delete())
    except Exception:  # no broker, or the queue is already gone
        pass


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); it is gone for our purposes.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split()[2] != "Z"
    except FileNotFoundError:
        return False


def serving(target: str, timeout: float = 1.0) -> bool:
    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout
            )
        except grpc.RpcError:
            return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


@contextlib.contextmanager
def running_suite(home: Path, model_path: Path, **kwargs: object) -> Iterator[RunningSuite]:
    """start_suite for a `with` block: the suite stops (SIGINT) when it ends."""
    suite = start_suite(home, model_path, **kwargs)  # type: ignore[arg-type]
    try:
        yield suite
    finally:
        suite.stop()


def start_suite(
    home: Path,
    model_path: Path,
    *,
    replicas: int = 1,
    extra_env: dict[str, str] | None = None,
    ready_timeout: float = 120.0,
) -> RunningSuite:
    """Start the launcher and wait for its 'suite_ready' log line."""
    base = free_port_block(9 + replicas)
    metrics = free_port_block(7 + replicas)  # the services', then the launcher's
    public, internal, admin = base, base + 1, base + 2
    env = {
        **os.environ,
        "HEADRACE_HOME": str(home),
        "HEADRACE_CONFIG": str(home / "no-such-headrace.toml"),
        "HEADRACE_PUBLIC_PORT": str(public),
        "HEADRACE_INTERNAL_PORT": str(internal),
        "HEADRACE_ADMIN_PORT": str(admin),
        "HEADRACE_SERVICE_PORT_BASE": str(base + 3),
        "HEADRACE_METRICS_PORT_BASE": str(metrics),
        "HEADRACE_INFERENCE_REPLICAS": str(replicas),
        "HEADRACE_MODELS": json.dumps(
            [
                {
                    "name": "tiny",
                    "path": str(model_path),
                    "context_size": 4096,
                    "chat_template": "chatml",
                }
            ]
        ),
        "HEADRACE_REDIS_URL": os.environ.get("HEADRACE_TEST_REDIS_URL", "redis://127.0.0.1:6379/9"),
        "HEADRACE_RESTART_BACKOFF_SECONDS": "0.2",
        "HEADRACE_GRACE_SECONDS": "3",
        "HEADRACE_STOP_TIMEOUT_SECONDS": "10",
        # Each suite has its own batch queue on the shared broker (deleted on stop),
        # so no test consumes another's, or a developer's, batch items.
        "HEADRACE_BATCH_QUEUE": f"headrace.test.{uuid.uuid4().hex[:12]}",
        # Redis outlives test runs: no token quotas unless a test sets its own tiers.
        "HEADRACE_TIERS": '{"free": {"requests_per_minute": 100000}, "unlimited": {}}',
        **(extra_env or {}),
    }
    home.mkdir(parents=True, exist_ok=True)
    log_path = home / "suite.log"
    log_file = log_path.open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "headrace.services.launcher"],
        cwd=REPO,
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    suite = RunningSuite(
        home=home,
        env=env,
        public=f"127.0.0.1:{public}",
        admin=f"127.0.0.1:{admin}",
        process=process,
        log_path=log_path,
        service_ports={
            "router": base + 3,
            "auth": base + 4,
            "sanitizer": base + 5,
            "cache": base + 6,
            **{f"inference-{i}": base + 7 + i for i in range(replicas)},
            "openai": base + 7 + replicas,  # after the inference replicas
            "upstream": base + 8 + replicas,
        },
        metrics_ports={
            name: metrics + i
            for i, name in enumerate(
                [
                    "router",
                    "auth",
                    "sanitizer",
                    "cache",
                    *(f"inference-{r}" for r in range(replicas)),
                    "openai",
                    "upstream",
                    "launcher",
                ]
            )
        },
    )
    deadline = time.monotonic() + ready_timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"launcher exited with {process.returncode}:\n{suite.log()[-4000:]}")
        if '"suite_ready"' in suite.log():
            return suite
        time.sleep(0.2)
    suite.stop()
    raise TimeoutError(f"suite not ready in {ready_timeout}s:\n{suite.log()[-4000:]}")


NODE_CLIENT = REPO / "clients" / "node"


def run_node(script: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """One of the Node client's example scripts, with `env` over this process's."""
    return subprocess.run(
        ["node", script, *args],
        cwd=NODE_CLIENT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def assert_absent_from_redis(db: int, secrets: list[bytes]) -> None:
    """The response was cached in Redis database `db` and no key or string value there
    (zlib-compressed or not) holds a secret; nothing to check without a Redis on
    127.0.0.1:6379 (the cache was in-process)."""
    import socket
    import zlib

    import redis

    with socket.socket() as sock:
        if sock.connect_ex(("127.0.0.1", 6379)) != 0:
            return
    client = redis.Redis(db=db)
    keys = list(client.scan_iter("*"))
    assert keys, "the answer was cached in Redis"
    for key in keys:
        assert not any(s in key for s in secrets)
        if client.type(key) != b"string":
            continue
        value = client.get(key) or b""
        try:
            value = zlib.decompress(value)
        except zlib.error:
            pass
        assert not any(s in value for s in secrets), key
