"""Decode speed and first token on an idle and on a busy machine, by how llama.cpp's
threads wait.

`python -m bench.contention`. Inference decodes with as many threads as cores; at
each of a decode step's barriers libgomp's workers spin before they sleep
(services/runtime/openmp.py). This measures llama-cpp-python decoding the default
model in a child process (greedy, fresh prompts, the gateway's load choices) with:

- libgomp's default spin (GOMP_SPINCOUNT=300000, what it spins when unset);
- Headrace's default, GOMP_SPINCOUNT=3000 (what the inference process sets);
- OMP_WAIT_POLICY=passive (sleep at once);
- one decode thread (libgomp's default; a barrier has nobody to wait for);

first on an idle machine, then beside one busy process (a Python loop at nice 10 in
its own session, as a build, a test run or another service would be). A request
stops after --cap seconds, so a collapsed decode is measured, not waited out. Each
prompt is fresh and as long as `bench.user_view`'s (a preamble and a task, about 50
tokens), so the first token is a prefill of the length users' requests have: the
spin matters there too, since a prefill's operations are uneven and a worker that
sleeps at each barrier pays the wake-up each time.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
from pathlib import Path

from bench.user_view import PREAMBLE, TASK
from headrace.services.inference.registry import resolve_path
from headrace.services.inference.settings import DEFAULT_MODEL
from headrace.services.runtime import openmp

CHILD = """
import json, sys, time
from pathlib import Path
from headrace.services.runtime.llama_params import load_llama
model, threads, requests, tokens, cap = sys.argv[1], int(sys.argv[2]), *map(float, sys.argv[3:6])
preamble, task = sys.argv[6:8]
llm = load_llama(Path(model), n_ctx=1024, n_threads=threads, n_threads_batch=threads, verbose=False)
llm.create_completion("Warm up.", max_tokens=4, temperature=0.0)
rates, firsts = [], []
for i in range(int(requests)):
    prompt = f"{preamble}Request {i} ({time.time_ns()}): {task}\\n"
    started, n, first = time.perf_counter(), 0, 0.0
    for _ in llm.create_completion(prompt, max_tokens=int(tokens), temperature=0.0, stream=True):
        n += 1
        first = first or time.perf_counter() - started
        if time.perf_counter() - started > cap:
            break
    rates.append(n / (time.perf_counter() - started))
    firsts.append(first * 1000)
print(json.dumps([rates, firsts]))
"""

SETTINGS: dict[str, tuple[int | None, dict[str, str]]] = {
    # The child loads llama.cpp through llama_params, which sets Headrace's spin unless
    # one is given: libgomp's own is given explicitly.
    "libgomp default": (None, {"GOMP_SPINCOUNT": openmp.LIBGOMP_DEFAULT}),
    f"GOMP_SPINCOUNT={openmp.SPIN_COUNT} (Headrace)": (None, {"GOMP_SPINCOUNT": openmp.SPIN_COUNT}),
    "OMP_WAIT_POLICY=passive": (None, {"OMP_WAIT_POLICY": "passive"}),
    "1 thread": (1, {"GOMP_SPINCOUNT": openmp.LIBGOMP_DEFAULT}),
}


def decode_rates(
    model: Path, threads: int, extra: dict[str, str], args: argparse.Namespace
) -> tuple[list[float], list[float]]:
    """Each request's tokens/s and its first token (ms)."""
    env = openmp.without_settings()
    argv = [sys.executable, "-c", CHILD, str(model), str(threads)]
    argv += [str(args.requests), str(args.max_tokens), str(args.cap), PREAMBLE, TASK]
    out = subprocess.run(
        argv, env={**env, **extra}, capture_output=True, text=True, check=True, timeout=900
    )
    rates, firsts = json.loads(out.stdout.strip().splitlines()[-1])
    return rates, firsts


def busy_process() -> subprocess.Popen[bytes]:
    """A CPU-bound loop at nice 10 in a session of its own (its own scheduling group)."""
    return subprocess.Popen(
        ["nice", "-n", "10", sys.executable, "-c", "while True: pass"], start_new_session=True
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--cap", type=float, default=15.0, help="seconds per request at most")
    parser.add_argument(
        "--spin-counts", default="", help="more GOMP_SPINCOUNT values to measure, e.g. 100,1000"
    )
    args = parser.parse_args()
    settings = dict(SETTINGS)
    for count in filter(None, args.spin_counts.split(",")):
        settings[f"GOMP_SPINCOUNT={count}"] = (None, {"GOMP_SPINCOUNT": count})
    model = resolve_path(DEFAULT_MODEL, Path(".headrace").resolve())
    cores = os.cpu_count() or 1
    print(
        f"{model.name}, {cores} cores, {args.requests} requests x {args.max_tokens} tokens "
        f"(each cut at {args.cap:.0f} s), greedy; median tokens/s and first token",
        flush=True,
    )
    table: dict[str, dict[str, tuple[float, float]]] = {}
    machines = ("idle", "one busy process")
    for machine in machines:
        busy = busy_process() if machine != "idle" else None
        try:
            for name, (threads, extra) in settings.items():
                rates, firsts = decode_rates(model, threads or cores, extra, args)
                table.setdefault(name, {})[machine] = (
                    statistics.median(rates),
                    statistics.median(firsts),
                )
                print(
                    f"  {machine}, {name}: {', '.join(f'{r:.1f}' for r in rates)} tokens/s; "
                    f"first token {', '.join(f'{f:.0f}' for f in firsts)} ms",
                    flush=True,
                )
        finally:
            if busy is not None:
                os.killpg(busy.pid, signal.SIGKILL)
                busy.wait()
    print(
        "\n| decode threads wait by | tokens/s, idle | first token, idle "
        "| tokens/s, one busy process | first token, one busy process |"
    )
    print("|---|---|---|---|---|")
    for name, row in table.items():
        cells = " | ".join(f"{row[m][0]:.1f} | {row[m][1]:.0f} ms" for m in machines)
        print(f"| {name} | {cells} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
