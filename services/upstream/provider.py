"""One hosted model behind an OpenAI-compatible API: a pooled HTTP client that streams
/v1/chat/completions into deltas. Knows nothing of gRPC or allowances.

Failures are typed for the router: UpstreamUnavailable (5xx, timeouts, refused
connections, a stream cut short: the router tries the next candidate before the first
token, and ends the stream UNAVAILABLE after it) and RateLimited (429, with the
provider's retry-after). Every message is scrubbed of the API key first: error
bodies can echo it, whole or in fragments.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import re
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import httpx

from headrace.services.runtime.errors import HeadraceError
from headrace.services.runtime.openai_wire import (
    SSE_END,
    chat_request_body,
    error_message,
    parse_chat_chunk,
    sse_data,
)
from headrace.services.upstream.settings import HostedModel
from headrace.services.upstream.tokens import estimate_tokens

REDACTED = "[redacted]"

# Credentials a body may echo whatever the key: OpenAI-style keys, bearer tokens.
_CREDENTIAL = re.compile(r"(?i)\b(?:sk|pk|rk|gsk|key)[-_][A-Za-z0-9_\-*.]{6,}|bearer\s+\S+")
_WORD = re.compile(r"[A-Za-z0-9_\-*.]{6,}")


class Scrubber:
    """Removes a key, and any run of 6+ of its characters, from text bound for a log or
    a client (providers echo "Incorrect API key provided: sk-ab***yz12")."""

    def __init__(self, *secrets: str) -> None:
        self._secrets = [s for s in secrets if s]

    def _leaks(self, word: str) -> bool:
        for secret in self._secrets:
            for part in re.split(r"[*.]+", word):
                if len(part) >= 6 and part in secret:
                    return True
        return False

    def __call__(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        text = _CREDENTIAL.sub(REDACTED, text)
        return _WORD.sub(lambda m: REDACTED if self._leaks(m.group()) else m.group(), text)


class UpstreamUnavailable(HeadraceError):
    """The provider failed or could not be reached; `reached` is False when the request
    never got to it (its allowance is given back)."""

    code = grpc.StatusCode.UNAVAILABLE

    def __init__(self, message: str, *, reached: bool = True) -> None:
        super().__init__(message)
        self.reached = reached


class RateLimited(HeadraceError):
    """The provider answered 429: back off for `retry_after_s` (None: it did not say)."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, retry_after_s: float | None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Delta:
    """Text since the last delta; on the last one, how it ended and the token counts."""

    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_from_provider: bool = True


def retry_after(headers: httpx.Headers, now: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `retry-after` (seconds or an HTTP date)."""
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return max(float(ms) / 1000, 0.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def _http2_available() -> bool:
    try:
        import h2  # noqa: F401
    except ImportError:
        return False
    return True


class OpenAIUpstream:
    """A hosted model's endpoint with one connection pool (HTTP/2 where offered)."""

    def __init__(self, spec: HostedModel, transport: httpx.AsyncBaseTransport | None = None):
        self.spec = spec
        key = spec.api_key()
        self.has_key = bool(key)
        self.scrub = Scrubber(key)
        headers = {"authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.AsyncClient(
            base_url=spec.base_url.rstrip("/") + "/",
            headers=headers,
            http2=spec.http2 and _http2_available(),
            limits=httpx.Limits(
                max_connections=spec.max_connections,
                max_keepalive_connections=spec.max_connections,
                keepalive_expiry=60,
            ),
            timeout=httpx.Timeout(
                connect=spec.connect_timeout_seconds,
                read=spec.read_timeout_seconds,
                write=spec.read_timeout_seconds,
                pool=spec.connect_timeout_seconds,
            ),
            transport=transport,
            verify=ssl.create_default_context(cafile=str(spec.ca_file)) if spec.ca_file else True,
            follow_redirects=False,
        )

    @property
    def where(self) -> str:
        return f"hosted model {self.spec.name!r} ({self.spec.provider})"

    async def close(self) -> None:
        await self._client.aclose()

    async def stream(
        self, messages: list[dict[str, str]], options: dict[str, object]
    ) -> AsyncIterator[Delta]:
        """The answer to `messages` as deltas; the upstream request is closed when the
        iteration stops (the client cancelled), finishes, or fails."""
        body = chat_request_body(self.spec.model, messages, **options)  # type: ignore[arg-type]
        request = self._client.build_request("POST", "chat/completions", json=body)
        first_deadline = time.monotonic() + self.spec.first_token_timeout_seconds
        try:
            async with asyncio.timeout(self.spec.first_token_timeout_seconds):
                response = await self._client.send(request, stream=True)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            raise UpstreamUnavailable(
                f"{self.where} cannot be reached ({self.scrub(str(exc)) or type(exc).__name__})",
                reached=False,
            ) from None
        except (TimeoutError, httpx.TimeoutException):
            raise UpstreamUnavailable(
                f"{self.where} did not answer within {self.spec.first_token_timeout_seconds}s"
            ) from None
        except httpx.HTTPError as exc:
            raise UpstreamUnavailable(f"{self.where} failed: {self.scrub(str(exc))}") from None
        try:
            if response.status_code != 200:
                await self._refuse(response)
            async for delta in self._deltas(response, messages, first_deadline):
                yield delta
        finally:
            await response.aclose()

    async def _refuse(self, response: httpx.Response) -> None:
        try:
            async with asyncio.timeout(self.spec.read_timeout_seconds):
                raw = await response.aread()
            try:
                detail = error_message(json.loads(raw))
            except ValueError:
                detail = raw.decode(errors="replace")[:300]
        except (httpx.HTTPError, TimeoutError):
            detail = ""
        detail = self.scrub(detail.strip())
        status = response.status_code
        said = f" {detail!r}" if detail else ""
        if status == 429:
            raise RateLimited(
                f"{self.where} answered 429 (rate limited){said}",
                retry_after(response.headers),
            )
        if status in (401, 403):
            raise UpstreamUnavailable(
                f"{self.where} refused its API key ({status}); check the key its "
                f"api_key_env or api_key_file names{said}"
            )
        raise UpstreamUnavailable(f"{self.where} answered HTTP {status}{said}")

    async def _deltas(
        self, response: httpx.Response, messages: list[dict[str, str]], first_deadline: float
    ) -> AsyncIterator[Delta]:
        lines = response.aiter_lines()
        texts: list[str] = []
        finish: str | None = None
        usage = None
        ended = False
        while True:
            try:
                # Until the first text, the first-token deadline; then httpx's read
                # timeout between chunks. (No yield inside the timeout's block.)
                left = None if texts else max(first_deadline - time.monotonic(), 0.001)
                async with asyncio.timeout(left):
                    line = await anext(lines)
            except StopAsyncIteration:
                break
            except (TimeoutError, httpx.TimeoutException):
                raise UpstreamUnavailable(
                    f"{self.where} stalled: no data for "
                    f"{self.spec.read_timeout_seconds if texts else self.spec.first_token_timeout_seconds}s"
                ) from None
            except httpx.HTTPError as exc:
                raise UpstreamUnavailable(
                    f"{self.where} broke off the stream ({self.scrub(str(exc)) or type(exc).__name__})"
                ) from None
            data = sse_data(line)
            if data is None:
                continue
            if data == SSE_END:
                ended = True
                break
            try:
                piece = parse_chat_chunk(data)
            except ValueError as exc:
                raise UpstreamUnavailable(
                    f"{self.where} sent an error mid-stream: {self.scrub(str(exc))}"
                ) from None
            finish = piece.finish_reason or finish
            usage = piece.usage or usage
            if piece.text:
                texts.append(piece.text)
                yield Delta(piece.text)
        if ended:
            # Read to the body's end, so the connection goes back to the pool (closing a
            # response mid-body closes its connection).
            with contextlib.suppress(TimeoutError, httpx.HTTPError):
                async with asyncio.timeout(1.0):
                    async for _ in lines:
                        pass
        if not ended and finish is None:
            raise UpstreamUnavailable(f"{self.where} ended the stream before it finished")
        if usage is not None:
            yield Delta("", finish or "stop", usage.prompt_tokens, usage.completion_tokens)
            return
        # No usage from the provider: count locally (an estimate, see tokens.py).
        prompt = sum(estimate_tokens(m["content"]) + 4 for m in messages)
        yield Delta(
            "", finish or "stop", prompt, estimate_tokens("".join(texts)), usage_from_provider=False
        )
