"""The OpenAI-compatible front door vs gRPC, side by side on one running suite.

The same greedy request (the cache bypassed on both sides: gRPC sets bypass_cache, the
HTTP side a fresh seed per request, which greedy output ignores but the cache key
does not) alternately over gRPC (RouterService.Generate through Envoy) and over HTTP
(POST /v1/chat/completions through Envoy, server-sent events read with a keep-alive
HTTP client). Reported: first visible text (many short pairs), decode tokens/s of one
stream, and aggregate tokens/s of 4 concurrent streams, each with the HTTP/gRPC ratio.
Goal (issue 18): +5 ms or less to first text, 0.97 or more of gRPC's decode rate.

When the router does not take conversations yet (GenerateRequest.messages), both sides
send the prompt instead (/v1/completions vs Generate with prompt) and say so.
"""

from __future__ import annotations

import itertools
import json
import statistics
import threading
import time
from dataclasses import dataclass

import grpc
import httpx2 as httpx

from headrace.router.v1 import router_pb2, router_pb2_grpc
from headrace.types.v1 import types_pb2

_seeds = itertools.count(int(time.time()))


@dataclass
class Sample:
    first_text_s: float
    decode_tps: float
    tokens: int


def _tps(first: float, last: float, tokens: int) -> float:
    return (tokens - 1) / (last - first) if tokens > 1 and last > first else 0.0


def _grpc_request(prompt: str, max_tokens: int, chat: bool) -> router_pb2.GenerateRequest:
    request = router_pb2.GenerateRequest(
        bypass_cache=True, params=types_pb2.SamplingParams(max_tokens=max_tokens, temperature=0.0)
    )
    if chat:
        request.messages.add(role=types_pb2.ROLE_USER, content=prompt)
    else:
        request.prompt = prompt
    return request


def over_grpc(
    stub: router_pb2_grpc.RouterServiceStub, token: str, prompt: str, max_tokens: int, chat: bool
) -> Sample:
    started = time.perf_counter()
    first = last = 0.0
    tokens = 0
    request = _grpc_request(prompt, max_tokens, chat)
    for message in stub.Generate(request, metadata=(("authorization", f"Bearer {token}"),)):
        now = time.perf_counter()
        if message.text:
            first = first or now
            last = now
        if message.finish_reason:
            tokens = message.usage.completion_tokens
    return Sample(first - started, _tps(first, last, tokens), tokens)


def over_http(
    http: httpx.Client, base: str, token: str, prompt: str, max_tokens: int, chat: bool
) -> Sample:
    body: dict[str, object] = {
        "model": "",
        "max_tokens": max_tokens,
        "temperature": 0,
        "seed": next(_seeds),
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if chat:
        body["messages"] = [{"role": "user", "content": prompt}]
    else:
        body["prompt"] = prompt
    path = "/chat/completions" if chat else "/completions"
    started = time.perf_counter()
    first = last = 0.0
    tokens = 0
    headers = {"authorization": f"Bearer {token}"}
    with http.stream("POST", base + path, json=body, headers=headers) as reply:
        if reply.status_code != 200:
            raise RuntimeError(f"HTTP {reply.status_code}: {reply.read().decode()[:300]}")
        for line in reply.iter_lines():
            if not line.startswith("data: {"):
                continue
            now = time.perf_counter()
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                tokens = chunk["usage"]["completion_tokens"]
            for choice in chunk.get("choices", ()):
                if (choice.get("delta") or {}).get("content") or choice.get("text"):
                    first = first or now
                    last = now
    return Sample(first - started, _tps(first, last, tokens), tokens)


def _conversations_work(stub: router_pb2_grpc.RouterServiceStub, token: str) -> bool:
    try:
        over_grpc(stub, token, "Hi", 2, chat=True)
    except grpc.RpcError:
        return False
    return True


def _aggregate(run_one: object, streams: int) -> float:
    totals: list[int] = []
    lock = threading.Lock()

    def one() -> None:
        sample = run_one()  # type: ignore[operator]
        with lock:
            totals.append(sample.tokens)

    threads = [threading.Thread(target=one) for _ in range(streams)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(totals) / (time.perf_counter() - started)


def run(
    public: str,
    token: str,
    prompt: str,
    max_tokens: int,
    pairs: int = 40,
    rounds: int = 6,
    repeats: int = 3,
    short_tokens: int = 8,
) -> list[str]:
    """The markdown lines of the OpenAI-vs-gRPC table."""
    base = f"http://{public}/v1"
    med = statistics.median
    with grpc.insecure_channel(public) as channel, httpx.Client(timeout=120) as http:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        chat = _conversations_work(stub, token)

        def g(n: int) -> Sample:
            return over_grpc(stub, token, prompt, n, chat)

        def h(n: int) -> Sample:
            return over_http(http, base, token, prompt, n, chat)

        for warm in (g, h):
            warm(short_tokens)
        first: list[tuple[float, float]] = []
        for i in range(pairs):
            order = (g, h) if i % 2 == 0 else (h, g)
            got = {}
            for side in order:
                time.sleep(0.2)
                got[side] = side(short_tokens).first_text_s
            first.append((got[g], got[h]))
        decode: list[tuple[float, float]] = []
        for i in range(rounds):
            order = (g, h) if i % 2 == 0 else (h, g)
            got = {}
            for side in order:
                time.sleep(0.25)
                got[side] = side(max_tokens).decode_tps
            decode.append((got[g], got[h]))
    four: dict[str, list[float]] = {"grpc": [], "http": []}

    def grpc_one() -> Sample:
        with grpc.insecure_channel(public) as own:
            return over_grpc(
                router_pb2_grpc.RouterServiceStub(own), token, prompt, max_tokens, chat
            )

    def http_one() -> Sample:
        with httpx.Client(timeout=120) as own:
            return over_http(own, base, token, prompt, max_tokens, chat)

    for i in range(repeats):
        for name, one in (("grpc", grpc_one), ("http", http_one))[:: 1 if i % 2 == 0 else -1]:
            time.sleep(0.25)
            four[name].append(_aggregate(one, 4))

    what = (
        "/v1/chat/completions vs Generate(messages)"
        if chat
        else ("/v1/completions vs Generate(prompt) (the router does not take conversations yet)")
    )
    g_first = med(p[0] for p in first) * 1000
    h_first = med(p[1] for p in first) * 1000
    per_pair = sorted((b - a) * 1000 for a, b in first)
    g_tps, h_tps = med(p[0] for p in decode), med(p[1] for p in decode)
    g4, h4 = med(four["grpc"]), med(four["http"])
    return [
        f"OpenAI front door: {what}",
        "",
        "| measure | gRPC | OpenAI HTTP | HTTP vs gRPC | goal |",
        "|---|---|---|---|---|",
        f"| first visible text, ms (median of {len(first)} pairs, {short_tokens}-token requests) "
        f"| {g_first:.1f} | {h_first:.1f} | {h_first - g_first:+.1f} ms (per-pair median "
        f"{med(per_pair):+.1f}, middle half {per_pair[len(per_pair) // 4]:+.1f} to "
        f"{per_pair[(3 * len(per_pair)) // 4]:+.1f}) | ≤ +5 ms |",
        f"| decode tokens/s, 1 stream (median of {len(decode)}) | {g_tps:.1f} | {h_tps:.1f} "
        f"| {h_tps / g_tps:.3f} | ≥ 0.97 |",
        f"| aggregate tokens/s, 4 streams (median of {repeats}) | {g4:.1f} | {h4:.1f} "
        f"| {h4 / g4:.3f} | ≥ 0.97 |",
    ]
