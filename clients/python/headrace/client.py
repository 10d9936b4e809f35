"""An async Python client for the public API (RouterService through Envoy)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
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


ROLES = {
    "system": types_pb2.ROLE_SYSTEM,
    "developer": types_pb2.ROLE_SYSTEM,
    "user": types_pb2.ROLE_USER,
    "assistant": types_pb2.ROLE_ASSISTANT,
}


def chat_messages(
    turns: Iterable[types_pb2.ChatMessage | Mapping[str, str] | tuple[str, str]],
) -> list[types_pb2.ChatMessage]:
    """ChatMessages from dicts ({"role": "user", "content": "Hi"}), (role, content)
    pairs or ChatMessages; roles: system (or developer), user, assistant."""
    out = []
    for turn in turns:
        if isinstance(turn, types_pb2.ChatMessage):
            out.append(turn)
            continue
        role, content = (turn["role"], turn["content"]) if isinstance(turn, Mapping) else turn
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
        out.append(types_pb2.ChatMessage(role=ROLES[role], content=content))
    return out


def response_format(
    *,
    json_schema: str | Mapping[str, Any] | None = None,
    json_object: bool = False,
    grammar: str | None = None,
) -> types_pb2.ResponseFormat | None:
    """A ResponseFormat from at most one constraint (a schema as a dict or JSON text)."""
    if sum(x is not None and x is not False for x in (json_schema, grammar, json_object)) > 1:
        raise ValueError("give at most one of json_schema, json_object and grammar")
    if json_schema is not None:
        text = json_schema if isinstance(json_schema, str) else json.dumps(json_schema)
        return types_pb2.ResponseFormat(json_schema=text)
    if grammar is not None:
        return types_pb2.ResponseFormat(grammar=grammar)
    if json_object:
        return types_pb2.ResponseFormat(json_object=True)
    return None


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
        prompt: str = "",
        *,
        messages: Sequence[types_pb2.ChatMessage] = (),
        response_format: types_pb2.ResponseFormat | None = None,
        model: str = "",
        task: str = "",
        params: types_pb2.SamplingParams | None = None,
        bypass_cache: bool = False,
        timeout: float | None = None,
    ) -> AsyncIterator[router_pb2.GenerateResponse]:
        """The Generate stream: text deltas, then a last message with finish_reason and usage.

        A prompt, or a conversation in `messages` (see `chat`). `timeout` is the whole
        request's deadline, retries included.
        """
        request = router_pb2.GenerateRequest(
            prompt=prompt,
            messages=messages,
            response_format=response_format,
            model=model,
            task=task,
            params=params,
            bypass_cache=bypass_cache,
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

    def chat(
        self,
        messages: Iterable[types_pb2.ChatMessage | Mapping[str, str] | tuple[str, str]],
        **kwargs: Any,
    ) -> AsyncIterator[router_pb2.GenerateResponse]:
        """A conversation's next reply as a stream, as `stream` streams a prompt's:
        `async for r in c.chat([("system", "Be brief."), ("user", "Hi")]): ...`"""
        return self.stream(messages=chat_messages(messages), **kwargs)

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

    async def generate(self, prompt: str = "", **kwargs: object) -> GenerateResult:
        """The whole response of one Generate (a prompt, or `messages=` for a chat)."""
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
