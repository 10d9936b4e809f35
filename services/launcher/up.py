"""`headrace up`: prepare `.headrace/`, render Envoy's config, start every
service and Envoy, wait until all report SERVING, print where to connect,
supervise, and on SIGINT/SIGTERM stop everything in order (router first, so
in-flight streams drain, then the internal services and Envoy).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from headrace.envoy.render import (
    Cluster,
    EnvoyLayout,
    envoy_binary,
    public_descriptor_set,
    render,
    validate,
)
from headrace.services.launcher.settings import LauncherSettings
from headrace.services.launcher.supervisor import Child, stop_with_parent
from headrace.services.runtime.logs import get_logger
from headrace.services.runtime.tls import CertPaths, channel_credentials, make_certs

log = get_logger(__name__)

SERVICES = ("router", "auth", "sanitizer", "cache")
INTERNAL = ("auth", "sanitizer", "cache", "inference")


@dataclass(frozen=True)
class Endpoint:
    """A service process: name, module, gRPC port, metrics port."""

    name: str
    module: str
    port: int
    metrics_port: int


def endpoints(settings: LauncherSettings) -> list[Endpoint]:
    """Every service process with its ports."""
    out = [
        Endpoint(
            name,
            f"headrace.services.{name}",
            settings.service_port_base + i,
            settings.metrics_port_base + i,
        )
        for i, name in enumerate(SERVICES)
    ]
    for replica in range(settings.inference_replicas):
        offset = len(SERVICES) + replica
        out.append(
            Endpoint(
                f"inference-{replica}",
                "headrace.services.inference",
                settings.service_port_base + offset,
                settings.metrics_port_base + offset,
            )
        )
    return out


def envoy_layout(settings: LauncherSettings, eps: list[Endpoint]) -> EnvoyLayout:
    clusters = [
        Cluster(name, [e.port for e in eps if e.name.split("-")[0] == name])
        for name in ("router", *INTERNAL)
    ]
    return EnvoyLayout(
        public_port=settings.public_port,
        internal_port=settings.internal_port,
        admin_port=settings.admin_port,
        host=settings.host,
        clusters=clusters,
        stream_window_bytes=settings.envoy_stream_window_bytes,
        buffer_limit_bytes=settings.envoy_buffer_limit_bytes,
    )


async def _serving(target: str, credentials: grpc.ChannelCredentials | None = None) -> bool:
    channel = (
        grpc.aio.insecure_channel(target)
        if credentials is None
        else grpc.aio.secure_channel(target, credentials)
    )
    async with channel:
        try:
            reply = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1.0
            )
        except grpc.aio.AioRpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING


def _envoy_ready(admin: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{admin}/ready", timeout=1.0) as reply:
            return reply.status == 200
    except OSError:
        return False


class Suite:
    """All processes of one `headrace up`."""

    def __init__(self, settings: LauncherSettings) -> None:
        self.settings = settings
        self.home = settings.home.resolve()
        self.eps = endpoints(settings)
        self.run_dir = self.home / "run"
        self.children: dict[str, Child] = {}
        self.certs = CertPaths(settings.cert_paths.root.resolve()) if settings.tls else None

    def prepare(self) -> Path:
        """Create .headrace/ and the rendered Envoy config (auth makes its own keys)."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(exist_ok=True)
        config = self.home / "envoy.yaml"
        descriptor = self.home / "public-api.binpb"
        descriptor.write_bytes(public_descriptor_set())
        layout = envoy_layout(self.settings, self.eps)
        if self.certs is not None:
            written = make_certs(self.certs)
            if written:
                log.info("certificates_written", directory=str(self.certs.root))
        layout = dataclasses.replace(layout, descriptor_path=str(descriptor), tls=self.certs)
        config.write_text(render(layout))
        checked = validate(config)
        if checked.returncode != 0:
            raise RuntimeError(f"Envoy rejects {config}: {checked.stderr.strip()[-2000:]}")
        return config

    def _child(self, name: str, argv: list[str], extra_env: dict[str, str]) -> Child:
        env = {**os.environ, "HEADRACE_HOME": str(self.home), **extra_env}
        return Child(
            name=name,
            argv=argv,
            env=env,
            pid_dir=self.run_dir,
            backoff_s=self.settings.restart_backoff_seconds,
            backoff_max_s=self.settings.restart_backoff_max_seconds,
        )

    def start(self, envoy_config: Path) -> None:
        s = self.settings
        for ep in self.eps:
            env = {
                "HEADRACE_HOST": s.host,
                "HEADRACE_PORT": str(ep.port),
                "HEADRACE_METRICS_PORT": str(ep.metrics_port),
                "HEADRACE_INTERNAL_TARGET": f"{s.host}:{s.internal_port}",
            }
            self.children[ep.name] = self._child(ep.name, [sys.executable, "-m", ep.module], env)
        self.children["envoy"] = self._child(
            "envoy",
            [
                envoy_binary(),
                "-c",
                str(envoy_config),
                "--disable-hot-restart",
                "--concurrency",
                str(s.envoy_concurrency),
                "--log-level",
                s.envoy_log_level,
            ],
            {},
        )
        for child in self.children.values():
            child.start()

    async def wait_ready(self) -> None:
        """Until every service and Envoy report SERVING (or the timeout passes)."""
        s = self.settings
        deadline = time.monotonic() + s.ready_timeout_seconds
        pending = {ep.name: f"{s.host}:{ep.port}" for ep in self.eps}
        pending["envoy"] = f"{s.host}:{s.public_port}"
        internal = public = None
        if self.certs is not None:
            internal = channel_credentials(self.certs)
            public = grpc.ssl_channel_credentials(self.certs.ca.read_bytes())
        while pending:
            for name, target in list(pending.items()):
                ok = await _serving(target, public if name == "envoy" else internal)
                if ok and name == "envoy":
                    ok = await asyncio.to_thread(_envoy_ready, f"{s.host}:{s.admin_port}")
                if ok:
                    del pending[name]
            if not pending:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"not SERVING after {s.ready_timeout_seconds}s: {sorted(pending)}"
                )
            await asyncio.sleep(0.2)

    async def stop(self) -> None:
        """Router first (drains client streams), then the rest together."""
        timeout = self.settings.stop_timeout_seconds
        router = self.children.get("router")
        if router is not None:
            await router.stop(timeout)
        await asyncio.gather(
            *(c.stop(timeout) for name, c in self.children.items() if name != "router")
        )

    def banner(self) -> str:
        s = self.settings
        lines = [
            "",
            "Headrace is up.",
            f"  gRPC (Envoy):  {s.host}:{s.public_port}   service headrace.router.v1.RouterService",
            f"  Envoy admin:   http://{s.host}:{s.admin_port}/stats",
        ]
        for ep in self.eps:
            lines.append(
                f"  {ep.name:<14} {s.host}:{ep.port}  metrics http://{s.host}:{ep.metrics_port}/metrics"
            )
        lines += [
            "",
            "Try:  .venv/bin/headrace generate 'The capital of France is'",
            "Stop: Ctrl-C",
            "",
        ]
        return "\n".join(lines)


async def run_up(settings: LauncherSettings) -> int:
    """Run the suite until SIGINT/SIGTERM; the exit code for the process."""
    if settings.stop_with_parent:
        stop_with_parent()
    suite = Suite(settings)
    config = suite.prepare()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    suite.start(config)
    code = 0
    try:
        ready = asyncio.ensure_future(suite.wait_ready())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({ready, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if ready.done():
            ready.result()
            print(suite.banner(), flush=True)
            log.info("suite_ready")
            await stop.wait()
        else:
            ready.cancel()
        stopped.cancel()
    except TimeoutError as exc:
        log.error("suite_not_ready", error=str(exc))
        code = 1
    finally:
        log.info("suite_stopping")
        await suite.stop()
        log.info("suite_stopped")
    return code
