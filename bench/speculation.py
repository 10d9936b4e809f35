"""First visible text with and without speculative prefill (issue 22), side by side.

`python -m bench.speculation [--pairs N] [--max-tokens M] [--model PATH]`: starts two
suites on the same GGUF (the default model when it is installed, else the tests' tiny
one), one with `HEADRACE_SPECULATE=false`, and alternates pairs of greedy requests
with fresh prompts sharing a prefix, on the default path (cache on, default tier), by
a credential admitted before (so the speculating suite speculates). Prints the medians
of the time to the first non-empty text and their difference. Short by design; on a
shared machine compare only numbers from one run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import grpc

from headrace.router.v1 import router_pb2, router_pb2_grpc
from headrace.types.v1 import types_pb2
from tests.support.suite import RunningSuite, start_suite

PREFIX = "You are a helpful assistant. Answer briefly. Question number "


def prompt() -> str:
    return f"{PREFIX}{uuid.uuid4().hex[:8]}: what is a lighthouse?"


def first_text(stub: router_pb2_grpc.RouterServiceStub, token: str, max_tokens: int) -> float:
    request = router_pb2.GenerateRequest(
        prompt=prompt(), params=types_pb2.SamplingParams(max_tokens=max_tokens, temperature=0.0)
    )
    metadata = (("authorization", f"Bearer {token}"),)
    started = time.perf_counter()
    first = float("nan")
    for message in stub.Generate(request, metadata=metadata, timeout=60):
        if message.text and first != first:
            first = time.perf_counter() - started
    return first


def default_or_tiny(home: Path) -> Path:
    from headrace.services.inference.registry import resolve_path
    from headrace.services.inference.settings import DEFAULT_MODEL

    try:
        return resolve_path(DEFAULT_MODEL, Path(".headrace").resolve())
    except Exception:  # not installed: the tests' tiny model (prefill is ~free there)
        from tests.support.tiny_model import write_tiny_model

        return write_tiny_model(home / "tiny.gguf")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--model", type=Path, default=None)
    parser.add_argument("--verbose", action="store_true", help="print every time")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="headrace-bench-spec-"))
    model = args.model or default_or_tiny(home)
    print(f"model {model.name}, {args.pairs} pairs, {args.max_tokens} tokens, cache on")
    registry = json.dumps([{"name": "bench", "path": str(model)}])
    suites: dict[str, RunningSuite] = {}
    try:
        for name, speculate in (("speculation", "true"), ("plain", "false")):
            suites[name] = start_suite(
                home / name,
                model,
                extra_env={"HEADRACE_MODELS": registry, "HEADRACE_SPECULATE": speculate},
            )
        channels = {n: grpc.insecure_channel(s.public) for n, s in suites.items()}
        stubs = {n: router_pb2_grpc.RouterServiceStub(c) for n, c in channels.items()}
        tokens = {n: s.token("bench") for n, s in suites.items()}
        for name in suites:  # admit the credential, warm both
            for _ in range(3):
                first_text(stubs[name], tokens[name], args.max_tokens)
        times: dict[str, list[float]] = {n: [] for n in suites}
        for i in range(args.pairs):
            order = list(suites) if i % 2 == 0 else list(reversed(suites))
            for name in order:
                times[name].append(first_text(stubs[name], tokens[name], args.max_tokens))
        used = suites["speculation"].metric(
            "router", "headrace_router_speculative_prefills_total", outcome="used"
        )
        medians = {n: statistics.median(t) * 1000 for n, t in times.items()}
        for name, ms in medians.items():
            print(f"first visible text, {name:<11} median {ms:6.1f} ms")
        gap = medians["plain"] - medians["speculation"]
        paired = statistics.median(
            (p - q) * 1000 for p, q in zip(times["plain"], times["speculation"], strict=True)
        )
        print(f"difference (plain - speculation): medians {gap:+.1f} ms, pairs {paired:+.1f} ms")
        if args.verbose:
            for name, values in times.items():
                print(name, " ".join(f"{v * 1000:.0f}" for v in values))
        print(f"speculations used: {used:.0f} of {args.pairs + 3} requests")
        for channel in channels.values():
            channel.close()
    finally:
        for suite in suites.values():
            suite.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
