"""Gateway vs in-process llama-cpp-python, side by side in one run.

Starts the whole suite (Envoy → router → auth/sanitizer/cache → inference) on free
ports with the default model, loads the same GGUF in this process with
llama-cpp-python, and alternates pairs of identical greedy requests (cache bypassed),
so machine noise hits both sides alike. Prints decode tokens/s for both and their
ratio, time to first token and the gateway's overhead (also for a tier whose sanitizer
policy has no output rule, which skips the streaming output filter, and for the
default path with the cache on: a lookup that misses, then the response stored), and
aggregate tokens/s through the gateway at 1, 4 and 8 concurrent streams; then the
OpenAI-compatible front door beside gRPC (bench/openai.py).

Time to first token is also measured on its own, in many more short pairs than the
decode rounds can afford: on a shared 2-core VM one pair's overhead spreads over
±15 ms, so 15 pairs leave its median uncertain by about ±3 ms.

    make bench                      # or: .venv/bin/python -m bench --rounds 5

`make bench` runs bench/user_view.py first: fresh prompts on the default path (cache
on, default tier), the peers (`llama_cpp.server`, llama-server) and issue 22's targets.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import llama_cpp

from headrace.router.v1 import router_pb2, router_pb2_grpc
from headrace.services.inference.registry import resolve_path
from headrace.services.inference.settings import DEFAULT_MODEL
from headrace.services.runtime.llama_params import load_llama
from headrace.types.v1 import types_pb2
from tests.support.suite import start_suite

BENCH_TIER = {"requests_per_minute": 1_000_000, "tokens_per_day": 1_000_000_000}
PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."
TTFT_TOKENS = 8


@dataclass
class Run:
    ttft_s: float
    decode_tps: float
    tokens: int


def _decode_tps(first: float, last: float, tokens: int) -> float:
    return (tokens - 1) / (last - first) if tokens > 1 and last > first else 0.0


def in_process(llm: llama_cpp.Llama, max_tokens: int) -> Run:
    started = time.perf_counter()
    first = last = 0.0
    tokens = 0
    for _chunk in llm.create_completion(
        PROMPT, max_tokens=max_tokens, temperature=0.0, stream=True
    ):
        now = time.perf_counter()
        first = first or now
        last = now
        tokens += 1
    return Run(first - started, _decode_tps(first, last, tokens), tokens)


def gateway(
    stub: router_pb2_grpc.RouterServiceStub,
    token: str,
    max_tokens: int,
    cache_miss_seed: int | None = None,
) -> Run:
    """One greedy request through the gateway, the cache bypassed; with
    `cache_miss_seed` the cache is used as by default, and the seed (part of the
    cache key, no effect on greedy output) makes it a miss that is then stored."""
    request = router_pb2.GenerateRequest(
        prompt=PROMPT,
        bypass_cache=cache_miss_seed is None,
        params=types_pb2.SamplingParams(max_tokens=max_tokens, temperature=0.0),
    )
    if cache_miss_seed is not None:
        request.params.seed = cache_miss_seed
    started = time.perf_counter()
    first = last = 0.0
    pieces = 0
    usage = 0
    for message in stub.Generate(request, metadata=(("authorization", f"Bearer {token}"),)):
        now = time.perf_counter()
        if message.text:
            first = first or now
            last = now
            pieces += 1
        if message.finish_reason:
            usage = message.usage.completion_tokens
    # Decode rate over the tokens between the first and the last text message. The
    # output filter may release a word of several tokens as one message, so count
    # the tokens the model reports, not the messages.
    return Run(first - started, _decode_tps(first, last, usage or pieces), usage)


def concurrent(target: str, token: str, streams: int, max_tokens: int) -> float:
    """Aggregate generated tokens/s with `streams` requests in flight at once."""
    totals: list[int] = []
    lock = threading.Lock()

    def one() -> None:
        with grpc.insecure_channel(target) as channel:
            stub = router_pb2_grpc.RouterServiceStub(channel)
            run = gateway(stub, token, max_tokens)
        with lock:
            totals.append(run.tokens)

    threads = [threading.Thread(target=one) for _ in range(streams)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(totals) / (time.perf_counter() - started)


def authorize_latency(internal: str, token: str, calls: int = 300) -> tuple[float, float]:
    """p50 and p99 (ms) of auth.Authorize through Envoy's internal listener: what
    the router pays per request for the token check, rate limit and quota."""
    from headrace.auth.v1 import auth_pb2, auth_pb2_grpc

    samples = []
    with grpc.insecure_channel(internal) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        request = auth_pb2.AuthorizeRequest(credential=token, reserve_tokens=10)
        for _ in range(20):
            stub.Authorize(request)
        for _ in range(calls):
            started = time.perf_counter()
            stub.Authorize(request)
            samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return samples[len(samples) // 2], samples[int(len(samples) * 0.99)]


def lookup_latency(internal: str, calls: int = 300) -> tuple[float, float]:
    """p50 and p99 (ms) of a cache hit's Lookup through Envoy's internal listener,
    first message (what a hit adds before its replay starts)."""
    from headrace.cache.v1 import cache_pb2, cache_pb2_grpc

    key = cache_pb2.CacheKey(
        model="bench",
        prompt=f"bench lookup {time.time()}",
        params=types_pb2.SamplingParams(temperature=0.0, max_tokens=8),
    )
    samples = []
    with grpc.insecure_channel(internal) as channel:
        stub = cache_pb2_grpc.CacheServiceStub(channel)
        list(stub.Lookup(cache_pb2.LookupRequest(key=key)))  # miss: opens a flight
        stub.Store(
            iter(
                [
                    cache_pb2.StoreRequest(key=key),
                    cache_pb2.StoreRequest(text="cached text"),
                    cache_pb2.StoreRequest(
                        complete=True, finish_reason=types_pb2.FINISH_REASON_LENGTH
                    ),
                ]
            )
        )
        for _ in range(calls + 20):
            started = time.perf_counter()
            first = next(iter(stub.Lookup(cache_pb2.LookupRequest(key=key))))
            samples.append((time.perf_counter() - started) * 1000)
            assert first.hit
    samples = sorted(samples[20:])
    return samples[len(samples) // 2], samples[int(len(samples) * 0.99)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # 15 rounds: on a shared 2-core VM a single pair's ratio varies by ±10%, so
    # fewer rounds leave the medians' uncertainty near the margins being measured.
    parser.add_argument(
        "--rounds",
        type=int,
        default=15,
        help="alternating rounds (in-process, gateway, no-filter tier, cache on)",
    )
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument(
        "--ttft-pairs",
        type=int,
        default=60,
        help="alternating in-process/gateway pairs of short requests for first-token time",
    )
    parser.add_argument(
        "--concurrency-repeats", type=int, default=3, help="runs of each stream count"
    )
    parser.add_argument(
        "--openai-pairs",
        type=int,
        default=40,
        help="gRPC/OpenAI-HTTP pairs for first visible text (0 skips the OpenAI section)",
    )
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="headrace-bench-"))
    model = resolve_path(DEFAULT_MODEL, Path(".headrace").resolve())
    threads = os.cpu_count() or 1
    print(f"model {model.name}, {threads} threads, {args.rounds} rounds, {args.max_tokens} tokens")
    # The gateway's own choice of llama.cpp's extra buffer types (off on AMX CPUs).
    llm = load_llama(
        model,
        n_ctx=2048,
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
    )
    suite = start_suite(
        home,
        model,
        extra_env={
            # The default model's own entry: Gemma's turn format, so chats (and the
            # OpenAI front door's /v1/chat/completions) are measured as users send them.
            "HEADRACE_MODELS": json.dumps(
                [{"name": "bench", "path": str(model), "chat_template": "gemma"}]
            ),
            "HEADRACE_TIERS": json.dumps({"bench": BENCH_TIER, "bench-unfiltered": BENCH_TIER}),
            # A tier whose policy has no output rule: nothing held back by the filter.
            "HEADRACE_TIER_POLICIES": json.dumps({"bench-unfiltered": {"redact": False}}),
        },
    )
    try:
        token = suite.token("bench", "--tier", "bench")
        unfiltered_token = suite.token("bench", "--tier", "bench-unfiltered")
        with grpc.insecure_channel(suite.public) as channel:
            stub = router_pb2_grpc.RouterServiceStub(channel)
            gateway(stub, token, 8)  # warm both sides
            in_process(llm, 8)
            gateway(stub, unfiltered_token, 8)
            # Seeds no earlier run used: every cache-path request is a miss.
            seeds = random.Random().sample(range(1, 2**31), args.rounds + 1)
            gateway(stub, token, 8, cache_miss_seed=seeds.pop())
            local: list[Run] = []
            remote: list[Run] = []
            unfiltered: list[Run] = []
            cached: list[Run] = []
            for i in range(args.rounds):
                steps = [
                    lambda: local.append(in_process(llm, args.max_tokens)),
                    lambda: remote.append(gateway(stub, token, args.max_tokens)),
                    lambda: unfiltered.append(gateway(stub, unfiltered_token, args.max_tokens)),
                    lambda: cached.append(
                        gateway(stub, token, args.max_tokens, cache_miss_seed=seeds.pop())
                    ),
                ]
                for step in steps if i % 2 == 0 else reversed(steps):
                    # Let the previous run's threads (llama.cpp's OpenMP workers
                    # spin after a decode) go idle, so neither side pays for the other.
                    time.sleep(0.25)
                    step()
            # First token on its own: short requests (decoding goes on after the first
            # token, as in a long one, while it travels), in-process and gateway
            # alternating, each pair's order swapped every other pair.
            ttft_pairs: list[tuple[float, float]] = []
            for i in range(args.ttft_pairs):
                time.sleep(0.25)
                if i % 2 == 0:
                    here = in_process(llm, TTFT_TOKENS).ttft_s
                    time.sleep(0.25)
                    there = gateway(stub, token, TTFT_TOKENS).ttft_s
                else:
                    there = gateway(stub, token, TTFT_TOKENS).ttft_s
                    time.sleep(0.25)
                    here = in_process(llm, TTFT_TOKENS).ttft_s
                ttft_pairs.append((here, there))
        llm.close()  # free the cores' caches for the concurrency runs
        # Each level three times, interleaved, median kept: one run of a level
        # varies by ±20% on a shared 2-core VM.
        runs: dict[int, list[float]] = {1: [], 4: [], 8: []}
        for _ in range(args.concurrency_repeats):
            for n, tps in runs.items():
                time.sleep(0.25)
                tps.append(concurrent(suite.public, token, n, args.max_tokens))
        aggregate = {n: statistics.median(tps) for n, tps in runs.items()}
        host, port = suite.public.rsplit(":", 1)
        auth_p50, auth_p99 = authorize_latency(f"{host}:{int(port) + 1}", token)
        hit_p50, hit_p99 = lookup_latency(f"{host}:{int(port) + 1}")
        from bench import openai as openai_bench

        openai_lines = (
            openai_bench.run(
                suite.public,
                token,
                PROMPT,
                args.max_tokens,
                pairs=args.openai_pairs,
                rounds=max(args.rounds // 2, 2),
                repeats=args.concurrency_repeats,
                short_tokens=TTFT_TOKENS,
            )
            if args.openai_pairs
            else []
        )
    finally:
        suite.stop()

    med = statistics.median
    l_tps, r_tps = med(r.decode_tps for r in local), med(r.decode_tps for r in remote)
    l_ttft, r_ttft = med(r.ttft_s for r in local), med(r.ttft_s for r in remote)
    print()
    print("| measure | in-process | gateway | gateway / in-process |")
    print("|---|---|---|---|")
    print(f"| decode tokens/s (median) | {l_tps:.1f} | {r_tps:.1f} | {r_tps / l_tps:.3f} |")
    print(
        f"| time to first token, ms (median) | {l_ttft * 1000:.1f} | {r_ttft * 1000:.1f} "
        f"| +{(r_ttft - l_ttft) * 1000:.1f} ms |"
    )
    u_tps, u_ttft = med(r.decode_tps for r in unfiltered), med(r.ttft_s for r in unfiltered)
    print(
        f"| decode tokens/s, tier without output rules | {l_tps:.1f} | {u_tps:.1f} "
        f"| {u_tps / l_tps:.3f} |"
    )
    print(
        f"| time to first token, ms, tier without output rules | {l_ttft * 1000:.1f} "
        f"| {u_ttft * 1000:.1f} | +{(u_ttft - l_ttft) * 1000:.1f} ms |"
    )
    c_tps, c_ttft = med(r.decode_tps for r in cached), med(r.ttft_s for r in cached)
    print(
        f"| decode tokens/s, cache on (a miss, then stored) | {l_tps:.1f} | {c_tps:.1f} "
        f"| {c_tps / l_tps:.3f} |"
    )
    print(
        f"| time to first token, ms, cache on (a miss) | {l_ttft * 1000:.1f} "
        f"| {c_ttft * 1000:.1f} | +{(c_ttft - l_ttft) * 1000:.1f} ms |"
    )
    # The spread over the pairs, so a reader can tell a margin from noise.
    ratios = sorted(r.decode_tps / lo.decode_tps for lo, r in zip(local, remote, strict=True))
    overheads = sorted((r.ttft_s - lo.ttft_s) * 1000 for lo, r in zip(local, remote, strict=True))
    print(
        f"| per pair, min–median–max ({len(ratios)} pairs) | | | decode {ratios[0]:.3f}–"
        f"{med(ratios):.3f}–{ratios[-1]:.3f}, first token +{overheads[0]:.1f}–"
        f"{med(overheads):.1f}–{overheads[-1]:.1f} ms |"
    )
    if ttft_pairs:
        local_ms = [p[0] * 1000 for p in ttft_pairs]
        gateway_ms = [p[1] * 1000 for p in ttft_pairs]
        each = sorted(b - a for a, b in zip(local_ms, gateway_ms, strict=True))
        print(
            f"| **time to first token, ms, default policy ({len(each)} pairs of "
            f"{TTFT_TOKENS}-token requests)** | {med(local_ms):.1f} | {med(gateway_ms):.1f} "
            f"| **+{med(gateway_ms) - med(local_ms):.1f} ms** (per-pair median +{med(each):.1f}, "
            f"middle half +{each[len(each) // 4]:.1f}–{each[(3 * len(each)) // 4]:.1f}) |"
        )
    print()
    print("| concurrent streams (gateway) | aggregate tokens/s (median) | vs 1 stream | runs |")
    print("|---|---|---|---|")
    for n, tps in aggregate.items():
        each = ", ".join(f"{t:.1f}" for t in runs[n])
        print(f"| {n} | {tps:.1f} | {tps / aggregate[1]:.2f}x | {each} |")
    print()
    print("| auth check (Authorize via Envoy: JWT, rate limit, quota) | p50 ms | p99 ms |")
    print("|---|---|---|")
    print(f"| per request | {auth_p50:.2f} | {auth_p99:.2f} |")
    print()
    print("| cache hit (Lookup via Envoy, first message) | p50 ms | p99 ms |")
    print("|---|---|---|")
    print(f"| per hit | {hit_p50:.2f} | {hit_p99:.2f} |")
    print()
    for line in openai_lines:
        print(line)
    if openai_lines:
        print()
    from bench import sanitizer

    for line in sanitizer.run():
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
