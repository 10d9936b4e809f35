"""An async Python client for the public API (RouterService through Envoy)."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import grpc

from headrace.router.v1 import router_pb2, router_pb2_grpc
from headrace.types.v1 import types_pb2

DEFAULT_TARGET = "127.0.0.1:8080"
CA_CERT_ENV = "HEADRACE_CA_CERT"
"""A CA certificate (PEM) to verify the gateway with: TLS instead of plaintext."""


def open_channel(target: str, ca_cert: str | os.PathLike[str] | None = None) -> grpc.aio.Channel:
    """A channel to the gateway: TLS verified with `ca_cert` (or $HEADRACE_CA_CERT,
    e.g. .headrace/certs/ca.pem when the suite runs with HEADRACE_TLS=true), else
    plaintext."""
    ca = ca_cert or os.environ.get(CA_CERT_ENV)
    if not ca:
        return grpc.aio.insecure_channel(target)
    credentials = grpc.ssl_channel_credentials(Path(ca).read_bytes())
    return grpc.aio.secure_channel(target, credentials)


@dataclass
class GenerateResult:
    """A whole response, assembled from the stream."""

    text: str = ""
    finish_reason: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False
    model: str = ""
    request_id: str = ""
    chunks: list[str] = field(default_factory=list)


def sampling_params(
    *,
    temperature: float | None = None,
    top_p: float | None = None,
    max_tokens: int | None = None,
    seed: int | None = None,
    stop: Sequence[str] = (),
    top_k: int | None = None,
    repeat_penalty: float | None = None,
) -> types_pb2.SamplingParams:
    """SamplingParams with only the given fields set."""
    params = types_pb2.SamplingParams(stop=list(stop))
    for name, value in (
        ("temperature", temperature),
        ("top_p", top_p),
        ("max_tokens", max_tokens),
        ("seed", seed),
        ("top_k", top_k),
        ("repeat_penalty", repeat_penalty),
    ):
        if value is not None:
            setattr(params, name, value)
    return params


RETRYABLE = (grpc.StatusCode.UNAVAILABLE,)


class Client:
    """`async with Client(token=...) as c: async for r in c.stream("Hi"): ...`

    A stream that fails with UNAVAILABLE before its first message is retried with
    exponential backoff (`retries` times, from `backoff_s`, doubling, with jitter);
    once a message has arrived, an error ends the stream, so text is never repeated.
    """

    def __init__(
        self,
        target: str = DEFAULT_TARGET,
        token: str | None = None,
        *,
        retries: int = 3,
        backoff_s: float = 0.2,
        ca_cert: str | os.PathLike[str] | None = None,
    ) -> None:
        self._channel = open_channel(target, ca_cert)
        self._stub = router_pb2_grpc.RouterServiceStub(self._channel)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._retries = retries
        self._backoff_s = backoff_s

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def stream(
        self,
        prompt: str,
        *,
        model: str = "",
        task: str = "",
        params: types_pb2.SamplingParams | None = None,
        bypass_cache: bool = False,
        timeout: float | None = None,
    ) -> AsyncIterator[router_pb2.GenerateResponse]:
        """The Generate stream: text deltas, then a last message with finish_reason and usage.

        `timeout` is the whole request's deadline, retries included.
        """
        request = router_pb2.GenerateRequest(
            prompt=prompt, model=model, task=task, params=params, bypass_cache=bypass_cache
        )
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = self._backoff_s
        for attempt in range(self._retries + 1):
            remaining = None if deadline is None else max(deadline - time.monotonic(), 0.001)
            call = self._stub.Generate(request, metadata=self._metadata, timeout=remaining)
            received = False
            try:
                async for message in call:
                    received = True
                    yield message
                return
            except grpc.aio.AioRpcError as exc:
                if received or exc.code() not in RETRYABLE or attempt == self._retries:
                    raise
                wait = delay * (0.5 + random.random())
                if deadline is not None and time.monotonic() + wait >= deadline:
                    raise
                await asyncio.sleep(wait)
                delay *= 2

    async def generate_many(
        self, prompts: Sequence[str], *, concurrency: int = 4, **kwargs: Any
    ) -> list[GenerateResult | BaseException]:
        """Every prompt's whole response, at most `concurrency` in flight; a failed
        prompt's slot holds its exception, in the prompts' order."""
        slots = asyncio.Semaphore(concurrency)

        async def one(prompt: str) -> GenerateResult:
            async with slots:
                return await self.generate(prompt, **kwargs)

        return await asyncio.gather(*(one(p) for p in prompts), return_exceptions=True)

    async def generate(self, prompt: str, **kwargs: object) -> GenerateResult:
        """The whole response of one Generate."""
        result = GenerateResult()
        async for message in self.stream(prompt, **kwargs):  # type: ignore[arg-type]
            if message.text:
                result.chunks.append(message.text)
            result.cached = result.cached or message.cached
            result.model = message.model or result.model
            result.request_id = message.request_id or result.request_id
            if message.finish_reason:
                result.finish_reason = types_pb2.FinishReason.Name(message.finish_reason)
                result.prompt_tokens = message.usage.prompt_tokens
                result.completion_tokens = message.usage.completion_tokens
        result.text = "".join(result.chunks)
        return result

    async def list_models(self, timeout: float | None = 10.0) -> list[router_pb2.Model]:
        reply = await self._stub.ListModels(
            router_pb2.ListModelsRequest(), metadata=self._metadata, timeout=timeout
        )
        return list(reply.models)
