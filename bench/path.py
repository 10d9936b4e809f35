"""Where the gateway's first visible text goes, stage by stage, from its traces.

`python -m bench.path [--requests N]`: the suite as `bench.user_view` starts it (the
default model as "bench", the default tier and one without output rules), with
tracing on and exporting to a collector inside this process. Each request is a fresh
prompt of 8 greedy tokens, alternating between the two tiers; the client notes when
it sent the request and when the first text arrived, on the same clock as the spans
(every process here reads the same wall clock). The printed medians split the
client's first-text time into:

- Envoy in: the client's send to the router's Generate span start (the client's own
  gRPC, Envoy's public listener and the router's handler start);
- admission: the router's span start to the later of Authorize's and CheckPrompt's
  answers (their spans' ends, as the servers saw them), and cache lookup's end;
- to inference: the router's span start to inference's span start (Generate, or
  Speculate when the router starts prefill beside admission);
- engine: inference's span start to its `first_token` event (tokenizing, the queue,
  prefill, the first step; for Speculate, also the wait for the commit);
- back to the router: inference's `first_token` to the router's (the hop, and the
  output filter's hold of the first word on the default tier);
- Envoy out: the router's `first_token` to the client's first text.

Inference called directly (its own port, no router) is split the same way from its own
span: "to inference" is the client's send to inference's Generate span start, "engine"
and "back" (inference's first token to the client's first text) as above; the
gateway-only stages are blank.

Each round also runs the same kind of prompt through llama-cpp-python in this process
(the weights loaded as `bench.user_view` loads them, its own spin), the reference the
gateway's first text is compared with; its row is the in-process first text.

Tracing costs a few microseconds per RPC (docs/tracing.md), and its exports are CPU
work beside the decode threads (here at most every 10 s), so the sum is close to, not
exactly, `bench.user_view`'s figure. Run on a quiet machine; the stages of one run
compare with each other, not with another machine's. `--env NAME=VALUE` passes a
setting to the suite (e.g. `HEADRACE_SPECULATE=false`, `GOMP_SPINCOUNT=3000`).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from bench.targets import order_for_round
from bench.user_view import (
    N_CTX,
    SHORT_TOKENS,
    UNFILTERED,
    UNFILTERED_TIER,
    Prompts,
    bench_subject,
    in_process,
    own_prompt,
    start_bench_suite,
)
from headrace.inference.v1 import inference_pb2, inference_pb2_grpc
from headrace.router.v1 import router_pb2, router_pb2_grpc
from headrace.services.inference.registry import resolve_path
from headrace.services.inference.settings import DEFAULT_MODEL
from headrace.services.runtime.llama_params import load_llama
from headrace.types.v1 import types_pb2
from tests.support.otlp import Collector, attributes

DEFAULT = "gateway"
IN_PROCESS = "in-process"
DIRECT = "inference directly"
TOKENS = SHORT_TOKENS
STAGES = (
    "Envoy in",
    "auth answered",
    "sanitizer answered",
    "cache looked up",
    "to inference",
    "engine",
    "back to the router",
    "Envoy out",
    "first text (client)",
)
ROUTER = "headrace-router"
SERVICES = {
    "headrace-auth": "/Authorize",
    "headrace-sanitizer": "/CheckPrompt",
    "headrace-cache": "/Answer",
}
"""The spans whose answer each admission stage waits for: the span's end, or its
`looked_up` event (cache.Answer lasts as long as the response it stores)."""


@dataclass
class Sent:
    side: str
    request_id: str
    sent_ns: int
    first_ns: int


def _first_text(side: str, request_id: str, stream: Iterable[object]) -> Sent:
    """Read a Generate stream to its end, noting when it was opened and when its
    first text came."""
    sent = time.time_ns()
    first = 0
    for message in stream:
        if message.text and not first:  # type: ignore[attr-defined]
            first = time.time_ns()
    return Sent(side, request_id, sent, first)


def send(stub: router_pb2_grpc.RouterServiceStub, token: str, prompt: str, side: str) -> Sent:
    request_id = f"path-{uuid.uuid4().hex[:16]}"
    metadata = (("authorization", f"Bearer {token}"), ("x-request-id", request_id))
    request = router_pb2.GenerateRequest(
        prompt=prompt, params=types_pb2.SamplingParams(max_tokens=TOKENS, temperature=0.0)
    )
    return _first_text(side, request_id, stub.Generate(request, metadata=metadata, timeout=60))


def send_direct(stub: inference_pb2_grpc.InferenceServiceStub, prompt: str) -> Sent:
    """InferenceService.Generate on inference's own port, with a request id to find its span."""
    request_id = f"path-{uuid.uuid4().hex[:16]}"
    request = inference_pb2.GenerateRequest(
        prompt=prompt, params=types_pb2.SamplingParams(max_tokens=TOKENS, temperature=0.0)
    )
    metadata = (("x-request-id", request_id),)
    return _first_text(DIRECT, request_id, stub.Generate(request, metadata=metadata, timeout=60))


def _event(span: object, name: str) -> int | None:
    for event in span.events:  # type: ignore[attr-defined]
        if event.name == name:
            return int(event.time_unix_nano)
    return None


def _ms(ns: int) -> float:
    return ns / 1e6


def _generate_span(collector: Collector, service: str, request_id: str) -> object | None:
    """The Generate span a service (a name, or its prefix) recorded for a request id."""
    found = None
    with collector.lock:
        for name, span in collector.spans:
            if (
                name.startswith(service)
                and span.name.endswith("/Generate")
                and attributes(span).get("headrace.request_id") == request_id
            ):
                found = span
    return found


def direct_stages(collector: Collector, sent: Sent) -> dict[str, float] | None:
    """The stages of a direct call to inference (None until its span has arrived)."""
    span: Any = _generate_span(collector, "headrace-inference", sent.request_id)
    first = _event(span, "first_token") if span is not None else None
    if span is None or first is None or not sent.first_ns:
        return None
    start = int(span.start_time_unix_nano)
    return {
        "to inference": _ms(start - sent.sent_ns),
        "engine": _ms(first - start),
        "back to the router": _ms(sent.first_ns - first),
        "first text (client)": _ms(sent.first_ns - sent.sent_ns),
    }


def stages(collector: Collector, sent: Sent) -> dict[str, float] | None:
    """Milliseconds of each stage of one request (None if its trace is incomplete)."""
    if sent.side == DIRECT:
        return direct_stages(collector, sent)
    root: Any = _generate_span(collector, ROUTER, sent.request_id)
    if root is None or not sent.first_ns:
        return None
    start = int(root.start_time_unix_nano)
    ends: dict[str, int] = {}
    inference = None
    for service, span in collector.trace(root.trace_id):
        for name, suffix in SERVICES.items():
            if service == name and span.name.endswith(suffix):
                ends[name] = _event(span, "looked_up") or int(span.end_time_unix_nano)
        if service.startswith("headrace-inference") and span.name.endswith(
            ("/Generate", "/Speculate")
        ):
            inference = span
    router_first = _event(root, "first_token")
    engine_first = _event(inference, "first_token") if inference is not None else None
    if inference is None or router_first is None or engine_first is None or len(ends) < 3:
        return None
    inference_start = int(inference.start_time_unix_nano)
    return {
        "Envoy in": _ms(start - sent.sent_ns),
        "auth answered": _ms(ends["headrace-auth"] - start),
        "sanitizer answered": _ms(ends["headrace-sanitizer"] - start),
        "cache looked up": _ms(ends["headrace-cache"] - start),
        "to inference": _ms(inference_start - start),
        "engine": _ms(engine_first - inference_start),
        "back to the router": _ms(router_first - engine_first),
        "Envoy out": _ms(sent.first_ns - router_first),
        "first text (client)": _ms(sent.first_ns - sent.sent_ns),
    }


def table(rows: dict[str, list[dict[str, float]]], reference: dict[str, list[float]]) -> str:
    sides = list(rows)
    lines = [
        "| stage (median ms) | " + " | ".join(sides) + " |",
        "|---|" + "---|" * len(sides),
    ]
    for stage in STAGES:
        cells = [
            f"{statistics.median(r[stage] for r in rows[side]):.1f}"
            if rows[side] and stage in rows[side][0]
            else "-"
            for side in sides
        ]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    for name, values in reference.items():
        median = f"{statistics.median(values):.1f}" if values else "-"
        lines.append(f"| {name} first text, same rounds | " + f"{median} | " * len(sides))
    counts = [f"{len(rows[side])}" for side in sides]
    lines.append("| requests with a whole trace | " + " | ".join(counts) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=40, help="per tier")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the suite, e.g. HEADRACE_SPECULATE=false (repeatable)",
    )
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.env)

    model = resolve_path(DEFAULT_MODEL, Path(".headrace").resolve())
    threads = os.cpu_count() or 1
    # In-process spins as its users' processes do (bench/__init__.py).
    llm = load_llama(model, n_ctx=N_CTX, n_threads=threads, n_threads_batch=threads, verbose=False)
    home = Path(tempfile.mkdtemp(prefix="headrace-bench-path-"))
    collector = Collector()
    suite = start_bench_suite(
        home,
        model,
        {
            "HEADRACE_TRACING_ENABLED": "true",
            "HEADRACE_TRACING_ENDPOINT": collector.endpoint,
            # Export seldom: an export is CPU work beside the decode threads.
            "OTEL_BSP_SCHEDULE_DELAY": "10000",
            **extra,
        },
    )
    try:
        subject = bench_subject()
        tokens = {
            DEFAULT: suite.token(subject),
            UNFILTERED: suite.token(subject, "--tier", UNFILTERED_TIER),
        }
        stub = router_pb2_grpc.RouterServiceStub(grpc.insecure_channel(suite.public))
        inference = f"127.0.0.1:{suite.service_ports['inference-0']}"
        prompts = Prompts()
        for side, token in tokens.items():  # warm every side
            send(stub, token, own_prompt(side, prompts.next()), side)
        direct = inference_pb2_grpc.InferenceServiceStub(grpc.insecure_channel(inference))
        send_direct(direct, prompts.next().replace("Request ", "Request d", 1))
        in_process(llm, prompts.next(), TOKENS)
        sent: list[Sent] = []
        reference: dict[str, list[float]] = {IN_PROCESS: []}
        for i in range(args.requests):
            prompt = prompts.next()
            for side in order_for_round((DEFAULT, UNFILTERED, IN_PROCESS, DIRECT), i):
                time.sleep(0.2)  # llama.cpp's workers idle before the next request
                if side == IN_PROCESS:
                    reference[side].append(in_process(llm, prompt, TOKENS).first_text_s * 1000)
                elif side == DIRECT:
                    # Its own sibling prompt: the gateway's sides reach the same slots.
                    sent.append(send_direct(direct, prompt.replace("Request ", "Request d", 1)))
                else:
                    sent.append(send(stub, tokens[side], own_prompt(side, prompt), side))
        # Spans arrive in the exporters' batches: wait for every trace to be whole (or
        # 40 s), then report what arrived.
        deadline = time.monotonic() + 40.0
        while None in (found := [stages(collector, s) for s in sent]):
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        rows: dict[str, list[dict[str, float]]] = {DEFAULT: [], UNFILTERED: [], DIRECT: []}
        for s, row in zip(sent, found, strict=True):
            if row is not None:
                rows[s.side].append(row)
        settings = "".join(f", {k}={v}" for k, v in extra.items())
        print(f"model {model.name}, {TOKENS} greedy tokens, fresh prompts, tracing on{settings}")
        print(table(rows, reference))
    finally:
        suite.stop()
        collector.server.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
