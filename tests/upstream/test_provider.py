"""The OpenAI-compatible client of hosted providers, against a real local SSE server:
streaming, usage (theirs, or counted here), 429/500/stall/cut streams, cancellation,
pooled connections, and keys scrubbed from every message."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from headrace.services.runtime.tls import CertPaths, make_certs
from headrace.services.upstream.provider import (
    REDACTED,
    Delta,
    OpenAIUpstream,
    RateLimited,
    Scrubber,
    UpstreamUnavailable,
)
from headrace.services.upstream.settings import HostedModel
from tests.upstream.fake_provider import FakeProvider
from tests.upstream.h2_provider import H2Provider

KEY = "sk-test-4f9c2a7be1d04c3aa9e2b7c6d5e4f3a2"
MESSAGES = [{"role": "user", "content": "Say something"}]


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProvider]:
    provider = FakeProvider().start()
    yield provider
    provider.stop()


@pytest.fixture
def upstream(fake: FakeProvider, monkeypatch: pytest.MonkeyPatch) -> OpenAIUpstream:
    fake.reset()
    fake.echo_key_in_errors = KEY
    monkeypatch.setenv("FAKE_PROVIDER_KEY", KEY)
    spec = HostedModel(
        name="hosted-small",
        base_url=fake.base_url,
        model="provider-model-1",
        api_key_env="FAKE_PROVIDER_KEY",
        first_token_timeout_seconds=1.0,
        read_timeout_seconds=1.0,
    )
    return OpenAIUpstream(spec)


async def collect(upstream: OpenAIUpstream, options: dict | None = None) -> list[Delta]:
    try:
        return [d async for d in upstream.stream(MESSAGES, options or {"max_tokens": 8})]
    finally:
        await upstream.close()


async def test_a_streamed_answer_comes_as_deltas_with_the_providers_usage(
    fake: FakeProvider, upstream: OpenAIUpstream
) -> None:
    deltas = await collect(upstream, {"max_tokens": 8, "temperature": 0.0})
    assert "".join(d.text for d in deltas) == "Hosted answer here."
    last = deltas[-1]
    assert (last.finish_reason, last.prompt_tokens, last.completion_tokens) == ("stop", 11, 4)
    sent = fake.received[0]
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["authorization"] == f"Bearer {KEY}"
    assert sent.body["model"] == "provider-model-1"
    assert sent.body["messages"] == MESSAGES
    assert sent.body["stream"] is True and sent.body["stream_options"] == {"include_usage": True}
    assert sent.body["max_tokens"] == 8 and sent.body["temperature"] == 0.0


async def test_a_grammar_and_a_response_format_are_sent_as_given(
    fake: FakeProvider, upstream: OpenAIUpstream
) -> None:
    fmt = {"type": "json_object"}
    await collect(upstream, {"max_tokens": 8, "grammar": 'root ::= "a"', "response_format": fmt})
    sent = fake.received[0].body
    assert sent["grammar"] == 'root ::= "a"' and sent["response_format"] == fmt


async def test_without_usage_from_the_provider_tokens_are_counted_here(
    fake: FakeProvider, upstream: OpenAIUpstream
) -> None:
    fake.mode = "no_usage"
    last = (await collect(upstream))[-1]
    assert last.finish_reason == "stop" and not last.usage_from_provider
    assert last.prompt_tokens > 0 and last.completion_tokens >= 4


async def test_a_429_is_rate_limited_with_the_providers_retry_after(
    fake: FakeProvider, upstream: OpenAIUpstream
) -> None:
    fake.mode, fake.retry_after = "429", 7
    with pytest.raises(RateLimited, match="429") as raised:
        await collect(upstream)
    assert raised.value.retry_after_s == 7


async def test_a_500_is_unavailable_and_its_echo_of_the_key_is_scrubbed(
    fake: FakeProvider, upstream: OpenAIUpstream
) -> None:
    fake.mode = "500"
    with pytest.raises(UpstreamUnavailable, match="HTTP 500") as raised:
        await collect(upstream)
    assert KEY not in raised.value.message and KEY[3:15] not in raised.value.message
    assert REDACTED in raised.value.message


async def test_a_stall_before_the_first_token_times_out(
    fake: FakeProvider, upstream: OpenAIUpstream
) -> None:
    fake.mode = "stall"
    started = asyncio.get_running_loop().time()
    with pytest.raises(UpstreamUnavailable, match=r"stalled|did not answer"):
        await collect(upstream)
    assert asyncio.get_running_loop().time() - started < 3


async def test_a_stream_cut_mid_way_fails_after_the_text_already_given(
    fake: FakeProvider, upstream: OpenAIUpstream
) -> None:
    fake.mode = "die"
    got: list[str] = []
    with pytest.raises(UpstreamUnavailable, match="hosted-small"):
        try:
            async for delta in upstream.stream(MESSAGES, {"max_tokens": 8}):
                got.append(delta.text)
        finally:
            await upstream.close()
    assert "".join(got) == "Hosted answer"


async def test_stopping_the_iteration_closes_the_upstream_request(
    fake: FakeProvider, upstream: OpenAIUpstream
) -> None:
    fake.chunk_delay_s = 0.2
    try:
        stream = upstream.stream(MESSAGES, {"max_tokens": 8})
        async with contextlib.aclosing(stream):
            async for delta in stream:
                if delta.text:
                    break
        for _ in range(50):
            if fake.cancelled:
                break
            await asyncio.sleep(0.05)
        assert fake.cancelled == 1
    finally:
        fake.chunk_delay_s = 0.0
        await upstream.close()


async def test_requests_share_pooled_connections(
    fake: FakeProvider, upstream: OpenAIUpstream
) -> None:
    try:
        for _ in range(4):
            [d async for d in upstream.stream(MESSAGES, {"max_tokens": 8})]
    finally:
        await upstream.close()
    assert fake.count() == 4 and fake.connections == 1


async def test_an_unreachable_provider_is_unavailable_and_not_reached() -> None:
    spec = HostedModel(name="gone", base_url="http://127.0.0.1:9/v1", connect_timeout_seconds=0.5)
    upstream = OpenAIUpstream(spec)
    with pytest.raises(UpstreamUnavailable, match="cannot be reached") as raised:
        await collect(upstream)
    assert raised.value.reached is False


def test_the_scrubber_removes_a_key_and_its_fragments() -> None:
    scrub = Scrubber(KEY)
    text = f"Incorrect API key provided: {KEY[:8]}***{KEY[-6:]}. Full: {KEY}. Bearer abc.def"
    cleaned = scrub(text)
    assert KEY not in cleaned and KEY[:8] not in cleaned and KEY[-6:] not in cleaned
    assert "abc.def" not in cleaned
    assert cleaned.startswith("Incorrect API key provided: ")


async def test_http2_is_spoken_where_the_provider_offers_it_streams_sharing_one_connection(
    tmp_path: Path,
) -> None:
    certs = CertPaths(tmp_path / "certs")
    make_certs(certs)
    server = H2Provider(certs).start()
    spec = HostedModel(name="h2", base_url=server.base_url, ca_file=certs.ca)
    upstream = OpenAIUpstream(spec)

    async def one() -> str:
        return "".join([d.text async for d in upstream.stream(MESSAGES, {"max_tokens": 8})])

    try:
        answers = await asyncio.gather(*(one() for _ in range(3)))
    finally:
        await upstream.close()
        server.stop()
    assert answers == ["Over HTTP/2."] * 3
    assert (server.connections, server.streams) == (1, 3)
    assert server.max_concurrent > 1  # multiplexed, not one after another
