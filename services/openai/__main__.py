"""`python -m headrace.services.openai`: the OpenAI-compatible HTTP front door.

Why Starlette on uvicorn: Starlette is the ASGI toolkit under FastAPI, vLLM's and
llama-cpp-python's OpenAI servers, kept by the Encode team; its StreamingResponse
watches for the client's disconnect and cancels the stream, which is how a closed
stream cancels its generation here. uvicorn serves it on httptools (llhttp, the
Node.js parser) and uvloop, the cheapest HTTP/1.1 path in Python, which keeps the
front door's cost to first text well under a millisecond. FastAPI's extra layer
(dependency injection, OpenAPI) would add per-request work and its own 422 errors,
where OpenAI's error objects are wanted.

On SIGTERM: /healthz turns 503 (Envoy stops sending new requests), the listener
closes, and in-flight streams get `grace_seconds` to finish before they are cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
from collections.abc import Iterator

import uvicorn

from headrace.services.openai.app import FrontDoor, make_app
from headrace.services.openai.router_client import RouterClient
from headrace.services.openai.settings import OpenAISettings
from headrace.services.runtime.channels import internal_channel
from headrace.services.runtime.logs import configure_logging, get_logger
from headrace.services.runtime.metrics import start_metrics_server

log = get_logger(__name__)


class _Server(uvicorn.Server):
    """uvicorn's server with our signal handling: uvicorn re-raises the signal once it
    has stopped, which would end the process before the router channel is closed."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def uvicorn_config(app: object, settings: OpenAISettings) -> uvicorn.Config:
    """How uvicorn serves the app: httptools, no access log (metrics count requests),
    mTLS with the suite's internal certificate when TLS is on."""
    tls: dict[str, object] = {}
    if settings.tls:
        paths = settings.cert_paths
        tls = {
            "ssl_certfile": str(paths.internal),
            "ssl_keyfile": str(paths.internal_key),
            "ssl_ca_certs": str(paths.ca),
            "ssl_cert_reqs": ssl.CERT_REQUIRED,
        }
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        loop="none",
        http="httptools",
        ws="none",
        lifespan="off",
        access_log=False,
        log_config=None,
        server_header=False,
        timeout_graceful_shutdown=max(int(settings.grace_seconds), 1),
        timeout_keep_alive=75,  # longer than Envoy's idle timeout for upstream connections
        **tls,  # type: ignore[arg-type]
    )


async def serve(settings: OpenAISettings) -> None:
    """Serve until SIGTERM/SIGINT, then drain and close."""
    channel = internal_channel(
        settings.internal_target, settings.cert_paths if settings.tls else None
    )
    door = FrontDoor(RouterClient(channel), settings)
    server = _Server(uvicorn_config(make_app(door), settings))

    def stop() -> None:
        door.draining = True
        server.should_exit = True

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    start_metrics_server(settings.host, settings.metrics_port)
    log.info(
        "serving",
        address=f"{settings.host}:{settings.port}",
        tls=settings.tls,
        metrics=f"http://{settings.host}:{settings.metrics_port}/metrics",
        router=settings.internal_target,
    )
    await server.serve()
    if not server.started:
        raise RuntimeError(f"cannot listen on {settings.host}:{settings.port}: port in use?")
    await channel.close()
    log.info("stopped")


def main() -> None:
    settings = OpenAISettings()
    configure_logging("openai", settings.log_level, settings.log_json)
    try:
        if settings.uvloop:
            import uvloop

            uvloop.run(serve(settings))
        else:
            asyncio.run(serve(settings))
    except Exception:
        log.exception("service_crashed")
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
