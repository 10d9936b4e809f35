"""The front door over a fake RouterService, with the real OpenAI SDK: what it sends to
the router (conversation, parameters, credential), what the SDK gets back (chunks,
bodies, errors), and that a client closing a stream cancels the router call. No
Envoy and no model: tests/e2e/test_openai*.py cover the real suite."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx2 as httpx
import openai
import pytest
from prometheus_client import REGISTRY

from headrace.router.v1 import router_pb2, router_pb2_grpc
from headrace.services.openai.__main__ import _Server, uvicorn_config
from headrace.services.openai.app import FrontDoor, make_app
from headrace.services.openai.router_client import RouterClient
from headrace.services.openai.settings import OpenAISettings
from headrace.types.v1 import types_pb2
from tests.support.ports import free_port

SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}


class FakeRouter(router_pb2_grpc.RouterServiceServicer):
    """Answers by the last user turn (or prompt): `fail:CODE`, `slow`, `midway`, or a
    fixed three-piece text. Keeps what it was sent."""

    def __init__(self) -> None:
        self.requests: list[router_pb2.GenerateRequest] = []
        self.metadata: list[dict[str, str]] = []
        self.cancelled = asyncio.Event()

    async def Generate(
        self, request: router_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[router_pb2.GenerateResponse]:
        self.requests.append(request)
        self.metadata.append(dict(context.invocation_metadata() or ()))
        text = request.messages[-1].content if request.messages else request.prompt
        common = {
            "model": request.model or "tiny",
            "request_id": "rid-1",
            "task": "chat",
            "arm": "exp/b",  # as the router does: on every message
        }
        if text.startswith("fail:"):
            code = grpc.StatusCode[text.split(":")[1]]
            if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
                context.set_trailing_metadata((("retry-after", "2.500"),))
            await context.abort(code, f"refused with {code.name}")
        if text == "slow":
            try:
                for i in range(1000):
                    yield router_pb2.GenerateResponse(text=f"w{i} ", **common)
                    await asyncio.sleep(0.02)
            except asyncio.CancelledError:  # how grpc.aio ends a call the client cancelled
                self.cancelled.set()
                raise
            return
        if text == "drain":
            for i in range(30):
                yield router_pb2.GenerateResponse(text=f"d{i} ", **common)
                await asyncio.sleep(0.03)
            yield router_pb2.GenerateResponse(
                finish_reason=types_pb2.FINISH_REASON_LENGTH, usage=types_pb2.Usage(), **common
            )
            return
        if text == "midway":
            yield router_pb2.GenerateResponse(text="partial", **common)
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the inference service went away")
        pieces = [json.dumps({"city": "Paris"})] if request.response_format.json_schema else []
        for piece in pieces or ["Hel", "lo", " world"]:
            yield router_pb2.GenerateResponse(text=piece, **common)
        yield router_pb2.GenerateResponse(
            finish_reason=types_pb2.FINISH_REASON_STOP,
            usage=types_pb2.Usage(prompt_tokens=7, completion_tokens=3, total_tokens=10),
            **common,
        )

    async def ListModels(
        self, request: router_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> router_pb2.ListModelsResponse:
        if not dict(context.invocation_metadata() or ()).get("authorization"):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing credential")
        return router_pb2.ListModelsResponse(
            models=[
                router_pb2.Model(
                    name="tiny", context_size=4096, is_default=True, aliases=["tiny-chat"]
                )
            ]
        )


@pytest.fixture(scope="module")
async def router_port(fake: FakeRouter) -> AsyncIterator[int]:
    grpc_server = grpc.aio.server()
    router_pb2_grpc.add_RouterServiceServicer_to_server(fake, grpc_server)
    port = grpc_server.add_insecure_port("127.0.0.1:0")
    await grpc_server.start()
    yield port
    await grpc_server.stop(0)


@pytest.fixture(scope="module")
def fake() -> FakeRouter:
    return FakeRouter()


@pytest.fixture(scope="module")
async def door(fake: FakeRouter, router_port: int) -> AsyncIterator[dict[str, Any]]:
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{router_port}")
    settings = OpenAISettings(
        port=free_port(), model_aliases={"gpt-4o-mini": "tiny", "ghost": "no-such-model"}
    )
    front = FrontDoor(RouterClient(channel), settings)
    server = _Server(uvicorn_config(make_app(front), settings))
    task = asyncio.create_task(server.serve())
    while not server.started:  # uvicorn offers no event for this  # noqa: ASYNC110
        await asyncio.sleep(0.01)
    base = f"http://127.0.0.1:{settings.port}/v1"
    client = openai.AsyncOpenAI(base_url=base, api_key="secret-key", max_retries=0)
    yield {"fake": fake, "client": client, "base": base, "door": front}
    await client.close()
    server.should_exit = True
    await task
    await channel.close()


async def test_a_streamed_chat_sends_the_conversation_and_returns_openai_chunks(
    door: dict[str, Any],
) -> None:
    fake: FakeRouter = door["fake"]
    stream = await door["client"].chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {"role": "developer", "content": "Be brief."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "Say "}, {"type": "text", "text": "hi"}],
            },
            {"role": "assistant", "content": "Hi?"},
            {"role": "user", "content": "Again"},
        ],
        max_completion_tokens=12,
        temperature=0.5,
        top_p=0.9,
        seed=42,
        stop=["\n\n"],
        stream=True,
        stream_options={"include_usage": True},
        n=1,
        presence_penalty=0,
        frequency_penalty=0,
        user="u-1",
    )
    chunks = [chunk async for chunk in stream]
    sent = fake.requests[-1]
    assert [(m.role, m.content) for m in sent.messages] == [
        (types_pb2.ROLE_SYSTEM, "Be brief."),
        (types_pb2.ROLE_USER, "Say hi"),
        (types_pb2.ROLE_ASSISTANT, "Hi?"),
        (types_pb2.ROLE_USER, "Again"),
    ]
    assert sent.model == "tiny" and not sent.prompt
    assert sent.params.max_tokens == 12 and sent.params.seed == 42
    assert sent.params.temperature == pytest.approx(0.5)
    assert sent.params.top_p == pytest.approx(0.9)
    assert list(sent.params.stop) == ["\n\n"]
    assert fake.metadata[-1]["authorization"] == "Bearer secret-key"
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert texts == ["Hel", "lo", " world"]
    assert chunks[0].choices[0].delta.role == "assistant"
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finish] == ["stop"]
    assert finish[0].model_extra["headrace"] == {
        "request_id": "rid-1",
        "task": "chat",
        "arm": "exp/b",
        "cached": False,
    }
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == 10
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")


async def test_a_non_streamed_chat_with_a_json_schema_returns_a_body_and_headers(
    door: dict[str, Any],
) -> None:
    raw = await door["client"].chat.completions.with_raw_response.create(
        model="tiny",
        messages=[{"role": "user", "content": "Where is the Louvre?"}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "place", "schema": SCHEMA, "strict": True},
        },
    )
    completion = raw.parse()
    sent: router_pb2.GenerateRequest = door["fake"].requests[-1]
    assert json.loads(sent.response_format.json_schema) == SCHEMA
    assert json.loads(completion.choices[0].message.content) == {"city": "Paris"}
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.prompt_tokens == 7 and completion.usage.completion_tokens == 3
    assert raw.headers["x-headrace-request-id"] == "rid-1"
    assert raw.headers["x-headrace-arm"] == "exp/b"
    assert raw.headers["x-headrace-task"] == "chat"


async def test_json_object_is_sent_as_the_routers_json_object_format(
    door: dict[str, Any],
) -> None:
    await door["client"].chat.completions.create(
        model="tiny",
        messages=[{"role": "system", "content": "JSON"}, {"role": "user", "content": "hi"}],
        response_format={"type": "json_object"},
        max_tokens=5,
    )
    sent: router_pb2.GenerateRequest = door["fake"].requests[-1]
    assert sent.response_format.json_object and sent.params.max_tokens == 5


async def test_a_text_completion_sends_the_prompt(door: dict[str, Any]) -> None:
    completion = await door["client"].completions.create(
        model="tiny", prompt="Once upon", max_tokens=3, logprobs=None, echo=False, best_of=1
    )
    sent: router_pb2.GenerateRequest = door["fake"].requests[-1]
    assert sent.prompt == "Once upon" and not sent.messages
    assert completion.choices[0].text == "Hello world"
    assert completion.object == "text_completion"


@pytest.mark.parametrize(
    ("code", "status", "error_class"),
    [
        ("UNAUTHENTICATED", 401, openai.AuthenticationError),
        ("PERMISSION_DENIED", 403, openai.PermissionDeniedError),
        ("NOT_FOUND", 404, openai.NotFoundError),
        ("RESOURCE_EXHAUSTED", 429, openai.RateLimitError),
        ("INVALID_ARGUMENT", 400, openai.BadRequestError),
        ("FAILED_PRECONDITION", 400, openai.BadRequestError),
        ("UNAVAILABLE", 503, openai.InternalServerError),
        ("DEADLINE_EXCEEDED", 504, openai.InternalServerError),
    ],
)
async def test_router_statuses_become_openai_errors(
    door: dict[str, Any], code: str, status: int, error_class: type[openai.APIStatusError]
) -> None:
    with pytest.raises(error_class) as info:
        await door["client"].chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": f"fail:{code}"}], stream=True
        )
    assert info.value.status_code == status
    assert info.value.body["message"] == f"refused with {code}"
    assert set(info.value.body) == {"message", "type", "code", "param"}
    if status == 429:
        assert info.value.response.headers["retry-after"] == "3"
        assert info.value.response.headers["retry-after-ms"] == "2500"


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"logit_bias": {"50256": -100}}, "logit_bias"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"logprobs": True}, "logprobs"),
        ({"no_such_field": 1}, "no_such_field"),
    ],
)
async def test_a_field_that_would_change_the_result_gets_400_naming_it(
    door: dict[str, Any], extra: dict[str, Any], param: str
) -> None:
    before = len(door["fake"].requests)
    with pytest.raises(openai.BadRequestError) as info:
        await door["client"].chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "hi"}], extra_body=extra
        )
    assert info.value.body["param"] == param
    assert param in info.value.body["message"]
    assert len(door["fake"].requests) == before, "refused before reaching the router"


async def test_an_image_part_gets_400_naming_the_part(door: dict[str, Any]) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await door["client"].chat.completions.create(
            model="tiny",
            messages=[
                {"role": "user", "content": "hi"},
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}],
                },
            ],
        )
    assert info.value.body["param"] == "messages[1].content[0]"


async def test_an_error_after_the_first_chunk_arrives_as_an_sse_error(
    door: dict[str, Any],
) -> None:
    stream = await door["client"].chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "midway"}], stream=True
    )
    received = []
    with pytest.raises(openai.APIError, match="went away"):
        async for chunk in stream:
            received.append(chunk)
    assert received[0].choices[0].delta.content == "partial"


async def test_closing_a_stream_cancels_the_router_call(door: dict[str, Any]) -> None:
    fake: FakeRouter = door["fake"]
    fake.cancelled.clear()
    stream = await door["client"].chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "slow"}], stream=True
    )
    seen = 0
    async for _chunk in stream:
        seen += 1
        if seen == 3:
            break
    await stream.close()
    await asyncio.wait_for(fake.cancelled.wait(), 1.0)
    # Settled once: no longer in flight, counted as a client disconnect (499).
    assert (
        REGISTRY.get_sample_value("headrace_openai_in_flight", {"endpoint": "chat.completions"})
        == 0
    )
    closed = {"endpoint": "chat.completions", "status": "499"}
    assert REGISTRY.get_sample_value("headrace_openai_requests_total", closed) >= 1


async def test_models_lists_served_names_and_their_aliases(door: dict[str, Any]) -> None:
    models = await door["client"].models.list()
    assert [m.id for m in models.data] == ["tiny", "tiny-chat", "gpt-4o-mini"]
    assert (await door["client"].models.retrieve("gpt-4o-mini")).id == "gpt-4o-mini"
    assert (await door["client"].models.retrieve("tiny-chat")).id == "tiny-chat"
    with pytest.raises(openai.NotFoundError) as info:
        await door["client"].models.retrieve("ghost")  # an alias of nothing served
    assert info.value.body["code"] == "model_not_found"


async def test_models_without_a_credential_is_401(door: dict[str, Any]) -> None:
    async with httpx.AsyncClient() as http:
        reply = await http.get(f"{door['base']}/models")
    assert reply.status_code == 401
    assert reply.json()["error"]["type"] == "authentication_error"


async def test_bad_json_and_unknown_paths_get_openai_errors(door: dict[str, Any]) -> None:
    async with httpx.AsyncClient() as http:
        bad = await http.post(f"{door['base']}/chat/completions", content=b"{nope")
        missing = await http.post(f"{door['base']}/embeddings", json={})
        health = await http.get(door["base"].replace("/v1", "/healthz"))
    assert bad.status_code == 400 and "not valid JSON" in bad.json()["error"]["message"]
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_url"
    assert health.status_code == 200


async def test_sigterm_drains_open_streams_then_exits_cleanly(
    router_port: int, tmp_path: Path
) -> None:
    """The service as its own process: on SIGTERM a stream in flight still ends with
    [DONE], new connections are refused, and the process exits 0."""
    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "HEADRACE_PORT": str(port),
        "HEADRACE_METRICS_PORT": str(metrics_port),
        "HEADRACE_INTERNAL_TARGET": f"127.0.0.1:{router_port}",
        "HEADRACE_GRACE_SECONDS": "10",
        "HEADRACE_CONFIG": str(tmp_path / "none.toml"),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "headrace.services.openai", env=env, stderr=asyncio.subprocess.PIPE
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            for _ in range(200):
                try:
                    if (await http.get(f"{base}/healthz")).status_code == 200:
                        break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            body = {"model": "tiny", "prompt": "drain", "stream": True}
            async with http.stream("POST", f"{base}/v1/completions", json=body) as reply:
                lines = reply.aiter_lines()
                first = await anext(lines)
                process.send_signal(signal.SIGTERM)
                rest = [line async for line in lines if line]
            assert first.startswith("data: {")
            assert rest[-1] == "data: [DONE]", "the stream in flight was drained"
            assert sum(line.startswith("data: {") for line in rest) >= 29
            with pytest.raises(httpx.TransportError):
                await http.get(f"{base}/healthz")
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_a_client_that_gives_up_on_a_whole_answer_cancels_the_router_call(
    door: dict[str, Any],
) -> None:
    fake: FakeRouter = door["fake"]
    fake.cancelled.clear()
    body = {"model": "tiny", "messages": [{"role": "user", "content": "slow"}]}
    # A plain HTTP client, so no x-stainless-timeout deadline ends the call instead.
    async with httpx.AsyncClient(timeout=0.5) as http:
        with pytest.raises(httpx.TimeoutException):
            await http.post(f"{door['base']}/chat/completions", json=body)
    await asyncio.wait_for(fake.cancelled.wait(), 1.0)
