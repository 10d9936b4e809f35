"""`python -m headrace.services.auth`: run the auth service."""

from __future__ import annotations

import asyncio
import contextlib

import grpc

from headrace.auth.v1 import auth_pb2, auth_pb2_grpc
from headrace.services.auth.apikeys import ApiKeyStore
from headrace.services.auth.authenticator import Authenticator
from headrace.services.auth.keys import KeyStore
from headrace.services.auth.limits import open_limits
from headrace.services.auth.servicer import AuthServicer
from headrace.services.auth.settings import AuthSettings
from headrace.services.auth.tokens import TokenVerifier
from headrace.services.runtime.logs import get_logger
from headrace.services.runtime.server import Service, run

log = get_logger(__name__)


async def make_service() -> Service:
    settings = AuthSettings()
    authenticator = Authenticator(
        TokenVerifier(KeyStore(settings.home / "keys"), settings),
        ApiKeyStore(settings.home / "apikeys.json"),
    )
    limits, redis_client = await open_limits(
        settings.tiers, settings.redis_url, settings.redis_timeout_seconds
    )

    async def watch_keys() -> None:
        # Rotations and API key changes are picked up here, never on a request.
        while True:
            await asyncio.sleep(settings.key_reload_seconds)
            try:
                await asyncio.to_thread(authenticator.reload_if_changed)
            except Exception:
                log.exception("key_reload_failed")

    watcher: asyncio.Task[None] | None = None

    async def register(server: grpc.aio.Server) -> list[str]:
        nonlocal watcher
        watcher = asyncio.create_task(watch_keys(), name="key-watcher")
        auth_pb2_grpc.add_AuthServiceServicer_to_server(AuthServicer(authenticator, limits), server)
        return [auth_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name]

    async def close() -> None:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        if redis_client is not None:
            await redis_client.aclose()

    return Service("auth", settings, register, close=close)


if __name__ == "__main__":
    run(make_service, "auth")
