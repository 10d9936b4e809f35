"""Bootstrap shared by every service: one grpc.aio server with the runtime's
interceptor, grpc.health.v1, server reflection, a Prometheus endpoint, JSON
logs, and a graceful stop on SIGTERM/SIGINT (stop accepting, report
NOT_SERVING, drain in-flight streams for `grace_seconds`, then cancel).
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from headrace.services.runtime import tracing
from headrace.services.runtime.interceptors import ServiceInterceptor
from headrace.services.runtime.logs import configure_logging, get_logger
from headrace.services.runtime.metrics import start_metrics_server
from headrace.services.runtime.settings import ServiceSettings
from headrace.services.runtime.tls import server_credentials

log = get_logger(__name__)

MAX_MESSAGE_BYTES = 16 * 1024 * 1024


@dataclass
class Service:
    """What a service brings to the runtime.

    `register` adds the service's servicers to the server (loading whatever
    they need first) and returns the full names of the services it added;
    `close` releases resources after the server has drained.
    """

    name: str
    settings: ServiceSettings
    register: Callable[[grpc.aio.Server], Awaitable[Sequence[str]]]
    close: Callable[[], Awaitable[None]] | None = None
    stopping: Callable[[], None] | None = None
    """Called when the stop begins, before draining: ends streams that would otherwise
    hold the drain for its whole grace (watch streams)."""
    extra_interceptors: list[grpc.aio.ServerInterceptor] = field(default_factory=list)


async def serve(service: Service, stop: asyncio.Event | None = None) -> None:
    """Run `service` until `stop` is set or SIGTERM/SIGINT arrives."""
    settings = service.settings
    server = grpc.aio.server(
        interceptors=[ServiceInterceptor(), *service.extra_interceptors],
        options=[
            # Without this, a second process could bind the same port and
            # silently take half the traffic.
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ],
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
    )
    names = list(await service.register(server))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [
            *names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    address = f"{settings.host}:{settings.port}"
    if settings.tls:
        # mTLS: only a caller with a certificate from the suite's CA gets in (Envoy).
        port = server.add_secure_port(address, server_credentials(settings.cert_paths))
    else:
        port = server.add_insecure_port(address)
    if port == 0:
        raise RuntimeError(f"cannot listen on {address}: port in use?")
    start_metrics_server(settings.host, settings.metrics_port)
    await server.start()
    for name in ["", *names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info(
        "serving",
        address=address,
        tls=settings.tls,
        metrics=f"http://{settings.host}:{settings.metrics_port}/metrics",
        services=names,
    )

    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()

    log.info("stopping", grace_seconds=settings.grace_seconds)
    await health_servicer.enter_graceful_shutdown()
    if service.stopping is not None:
        service.stopping()
    await server.stop(settings.grace_seconds)
    if service.close is not None:
        await service.close()
    tracing.shutdown()  # flushes the spans still queued
    log.info("stopped")


def run(make_service: Callable[[], Awaitable[Service]] | Callable[[], Service], name: str) -> None:
    """Entry point of a service process: logs, then serve until told to stop."""
    settings = ServiceSettings()
    configure_logging(name, settings.log_level, settings.log_json)
    if settings.tracing_enabled:
        tracing.configure(
            name.split("-")[0], settings.tracing_endpoint, settings.tracing_sample_ratio
        )

    async def main() -> None:
        made = make_service()
        service = await made if asyncio.iscoroutine(made) else made
        await serve(service)  # type: ignore[arg-type]

    try:
        if settings.uvloop:
            import uvloop

            uvloop.run(main())
        else:
            asyncio.run(main())
    except Exception:
        log.exception("service_crashed")
        raise SystemExit(1) from None
