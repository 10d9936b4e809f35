"""`headrace up`: prepare `.headrace/`, render Envoy's config, start every
service (the OpenAI HTTP front door too) and Envoy, wait until all report SERVING (the
front door: HTTP 200 on /healthz), print where to connect, supervise, and on
SIGINT/SIGTERM stop everything in order (the front doors first, openai then router, so
in-flight streams drain, then the internal services and Envoy).
"""

from __future__ import annotations

import asyncio
import dataclasses
import http.client
import json
import os
import signal
import ssl
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
from headrace.services.launcher.supervisor import Child, describe_exit, stop_with_parent
from headrace.services.runtime.logs import get_logger
from headrace.services.runtime.metrics import start_metrics_server
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
    health_path: str = ""
    """For an HTTP service (openai): its readiness is an HTTP GET of this path, not
    grpc.health.v1."""


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
    # The OpenAI-compatible HTTP front door, on the ports after the last replica.
    offset = len(SERVICES) + settings.inference_replicas
    out.append(
        Endpoint(
            "openai",
            "headrace.services.openai",
            settings.service_port_base + offset,
            settings.metrics_port_base + offset,
            health_path="/healthz",
        )
    )
    # The upstream service (hosted models), after the front door.
    offset += 1
    out.append(
        Endpoint(
            "upstream",
            "headrace.services.upstream",
            settings.service_port_base + offset,
            settings.metrics_port_base + offset,
        )
    )
    return out


def launcher_metrics_port(settings: LauncherSettings) -> int:
    """The launcher's own /metrics (restarts per service): after every service's port."""
    if settings.launcher_metrics_port:
        return settings.launcher_metrics_port
    return settings.metrics_port_base + len(endpoints(settings))


def envoy_layout(settings: LauncherSettings, eps: list[Endpoint]) -> EnvoyLayout:
    clusters = [
        Cluster(name, [e.port for e in eps if e.name.split("-")[0] == name])
        for name in ("router", *INTERNAL, "openai", "upstream")
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


def _http_ok(url: str, context: ssl.SSLContext | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0, context=context) as reply:
            return reply.status == 200
    except (OSError, http.client.HTTPException):  # not up, or not HTTP yet
        return False


def _envoy_ready(admin: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://{admin}/ready", timeout=1.0) as reply:
            return reply.status == 200
    except OSError:
        return False


def unhealthy_clusters(clusters_json: dict, names: set[str]) -> list[str]:
    """Of Envoy's `/clusters?format=json`, the named clusters with a host that is not
    healthy (or with no host at all), as "cluster: host reason" strings."""
    problems = []
    seen = set()
    for cluster in clusters_json.get("cluster_statuses", []):
        name = cluster.get("name")
        if name not in names:
            continue
        seen.add(name)
        hosts = cluster.get("host_statuses", [])
        if not hosts:
            problems.append(f"{name}: no hosts")
        for host in hosts:
            address = host.get("address", {}).get("socket_address", {})
            where = f"{address.get('address', '?')}:{address.get('port_value', '?')}"
            health = host.get("health_status", {})
            flags = sorted(k for k, v in health.items() if k != "eds_health_status" and v is True)
            eds = health.get("eds_health_status", "HEALTHY")
            if flags or eds not in ("HEALTHY", "UNKNOWN"):
                problems.append(f"{name}: {where} {', '.join(flags) or eds}")
    problems += [f"{name}: not in Envoy's clusters" for name in sorted(names - seen)]
    return problems


def _envoy_clusters(admin: str, names: set[str]) -> list[str]:
    try:
        url = f"http://{admin}/clusters?format=json"
        with urllib.request.urlopen(url, timeout=1.0) as reply:
            return unhealthy_clusters(json.loads(reply.read()), names)
    except (OSError, ValueError) as exc:
        return [f"admin {admin} unreachable: {exc}"]


class Suite:
    """All processes of one `headrace up`."""

    def __init__(self, settings: LauncherSettings) -> None:
        self.settings = settings
        self.home = settings.home.resolve()
        self.eps = endpoints(settings)
        self.run_dir = self.home / "run"
        self.children: dict[str, Child] = {}
        self.certs = CertPaths(settings.cert_paths.root.resolve()) if settings.tls else None
        self.ready = False
        self.early_exit: asyncio.Future[str] | None = None
        """Resolved with a message when a process exits before the suite is ready."""

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
            on_exit=self._exited,
        )

    def _exited(self, child: Child, code: int) -> None:
        """Before the suite is ready, any exit ends `up` (an honest start)."""
        if self.ready or self.early_exit is None or self.early_exit.done():
            return
        self.early_exit.set_result(exit_message(child, code))

    def start(self, envoy_config: Path) -> None:
        s = self.settings
        self.early_exit = asyncio.get_running_loop().create_future()
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
        """Until every service and Envoy report SERVING and Envoy sees every cluster's
        hosts healthy (or the timeout passes, naming what is not ready)."""
        s = self.settings
        deadline = time.monotonic() + s.ready_timeout_seconds
        pending = {ep.name: f"{s.host}:{ep.port}" for ep in self.eps}
        pending["envoy"] = f"{s.host}:{s.public_port}"
        http = {ep.name: ep.health_path for ep in self.eps if ep.health_path}
        internal = public = None
        https: ssl.SSLContext | None = None
        if self.certs is not None:
            internal = channel_credentials(self.certs)
            public = grpc.ssl_channel_credentials(self.certs.ca.read_bytes())
            https = ssl.create_default_context(cafile=str(self.certs.ca))
            https.load_cert_chain(str(self.certs.internal), str(self.certs.internal_key))
        while pending:
            for name, target in list(pending.items()):
                if name in http:
                    scheme = "https" if https is not None else "http"
                    url = f"{scheme}://{target}{http[name]}"
                    ok = await asyncio.to_thread(_http_ok, url, https)
                else:
                    ok = await _serving(target, public if name == "envoy" else internal)
                if ok and name == "envoy":
                    ok = await asyncio.to_thread(_envoy_ready, f"{s.host}:{s.admin_port}")
                if ok:
                    del pending[name]
            if not pending:
                break
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"not SERVING after {s.ready_timeout_seconds}s: {', '.join(sorted(pending))}"
                )
            await asyncio.sleep(0.2)
        # Envoy's own view: its active health checks must have found every host.
        admin = f"{s.host}:{s.admin_port}"
        names = {c.name for c in envoy_layout(s, self.eps).clusters}
        while problems := await asyncio.to_thread(_envoy_clusters, admin, names):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"Envoy does not see every backend healthy after "
                    f"{s.ready_timeout_seconds}s: {'; '.join(problems)}"
                )
            await asyncio.sleep(0.2)
        self.ready = True

    async def stop(self) -> None:
        """The front doors first, outermost first (each drains its client streams while
        what it calls still serves): openai, router; then the rest together."""
        timeout = self.settings.stop_timeout_seconds
        front = ("openai", "router")
        for name in front:
            child = self.children.get(name)
            if child is not None:
                await child.stop(timeout)
        await asyncio.gather(
            *(c.stop(timeout) for name, c in self.children.items() if name not in front)
        )

    def banner(self) -> str:
        s = self.settings
        lines = [
            "",
            "Headrace is up.",
            f"  gRPC (Envoy):  {s.host}:{s.public_port}   service headrace.router.v1.RouterService",
            f"  OpenAI API:    http://{s.host}:{s.public_port}/v1   (chat/completions, completions, models)",
            f"  Envoy admin:   http://{s.host}:{s.admin_port}/stats",
            f"  launcher       metrics http://{s.host}:{launcher_metrics_port(s)}/metrics",
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


def _readable(line: str) -> list[str]:
    """A JSON log line as `event key=value …` plus its traceback's lines; others as they are."""
    try:
        record = json.loads(line)
    except ValueError:
        return [line]
    if not isinstance(record, dict) or "event" not in record:
        return [line]
    skip = {"event", "level", "timestamp", "service", "exception"}
    fields = " ".join(f"{k}={v}" for k, v in record.items() if k not in skip)
    out = [f"{record.get('level', '')} {record['event']} {fields}".strip()]
    out += str(record.get("exception", "")).splitlines()[-6:]
    return out


def exit_message(child: Child, code: int) -> str:
    """What a user needs when a process dies during start: which, how, its last words."""
    lines = [out for line in child.tail for out in _readable(line)]
    return (
        f"headrace up: service {child.name!r} exited before the suite was ready "
        f"({describe_exit(code)}). Its last output:\n"
        + "\n".join(f"  | {line}" for line in lines[-30:])
        + "\nStopping everything. Run `.venv/bin/headrace doctor` to check this machine."
    )


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
    start_metrics_server(settings.host, launcher_metrics_port(settings))
    suite.start(config)
    assert suite.early_exit is not None
    code = 0
    try:
        ready = asyncio.ensure_future(suite.wait_ready())
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait({ready, stopped, suite.early_exit}, return_when=asyncio.FIRST_COMPLETED)
        if suite.early_exit.done():
            ready.cancel()
            message = suite.early_exit.result()
            log.error("suite_not_ready", error=message.splitlines()[0])
            print(message, file=sys.stderr, flush=True)
            code = 1
        elif ready.done():
            ready.result()
            print(suite.banner(), flush=True)
            log.info("suite_ready")
            await stop.wait()
        else:
            ready.cancel()
        stopped.cancel()
    except TimeoutError as exc:
        log.error("suite_not_ready", error=str(exc))
        print(
            f"headrace up: {exc}\nRun `.venv/bin/headrace doctor` to check this machine.",
            file=sys.stderr,
            flush=True,
        )
        code = 1
    finally:
        log.info("suite_stopping")
        await suite.stop()
        log.info("suite_stopped")
    return code
