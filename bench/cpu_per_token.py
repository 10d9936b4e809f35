"""CPU time per generated token, process by process (and inference thread by thread).

`python -m bench.cpu_per_token`. On a machine with as many cores as decode threads,
every millisecond of CPU another process spends per token is taken from llama.cpp's
workers, which wait for each other at every step: the 1-stream decode rate falls by
about that much. This tells where that CPU goes, which wall-clock figures cannot.

One suite, the default model, greedy, fresh prompts, one stream at a time. For each
side (the gateway on the default tier, a tier without output rules, inference's own
port) it reads /proc's utime+stime of every process of the suite (Envoy included)
and of this client before and after --requests requests of --max-tokens tokens, and
prints milliseconds of CPU per generated token. Inference is split by thread name:
its main thread runs the gRPC event loop, the decode thread and llama.cpp's workers
do the model's work. Threads that ended during the run are not counted.
Linux only (/proc).
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.user_view import (
    DEFAULT_MODEL,
    UNFILTERED_TIER,
    Prompts,
    Sample,
    bench_subject,
    engine_direct,
    start_bench_suite,
    through_gateway,
)
from headrace.services.inference.registry import resolve_path
from tests.support.suite import RunningSuite

TICK = os.sysconf("SC_CLK_TCK")


def _ticks(stat_path: Path) -> int:
    """utime + stime of one /proc stat file, in clock ticks."""
    fields = stat_path.read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _thread_names(pid: int) -> dict[int, str]:
    names = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            names[int(task.name)] = (task / "comm").read_text().strip()
        except OSError:
            continue
    return names


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def suite_processes(suite: RunningSuite) -> dict[str, int]:
    """The suite's processes by name: its pid files, plus Envoy (the launcher's child
    that has no pid file)."""
    named = suite.pids()
    known = set(named.values())
    launcher = suite.process.pid
    for child in _children(launcher):
        if child not in known:
            comm = Path(f"/proc/{child}/comm").read_text().strip()
            named["envoy" if "envoy" in comm else comm] = child
    return named


def snapshot(processes: dict[str, int]) -> dict[str, float]:
    """CPU seconds so far: each process, inference's threads by name (its main thread
    runs the asyncio/gRPC event loop), and this client."""
    seconds = {}
    for name, pid in processes.items():
        try:
            seconds[name] = _ticks(Path(f"/proc/{pid}/stat")) / TICK
        except OSError:
            continue
    inference = processes.get("inference-0")
    if inference is not None:
        for tid, comm in _thread_names(inference).items():
            label = "inference-0: event loop" if tid == inference else f"inference-0: {comm}"
            try:
                ticks = _ticks(Path(f"/proc/{inference}/task/{tid}/stat"))
            except OSError:
                continue
            seconds[label] = seconds.get(label, 0.0) + ticks / TICK
    usage = resource.getrusage(resource.RUSAGE_SELF)
    seconds["client (this process)"] = usage.ru_utime + usage.ru_stime
    return seconds


def measure(
    side: Callable[[str, int], Sample],
    processes: dict[str, int],
    prompts: Prompts,
    requests: int,
    max_tokens: int,
) -> tuple[dict[str, float], int, float]:
    """ms of CPU per token for each process; the tokens generated; tokens/s."""
    side(prompts.next(), 8)
    before = snapshot(processes)
    tokens, seconds = 0, 0.0
    for _ in range(requests):
        sample = side(prompts.next(), max_tokens)
        tokens += sample.tokens
        seconds += sample.tokens / sample.tps if sample.tps else 0.0
        time.sleep(0.1)
    after = snapshot(processes)
    per_token = {k: (after[k] - before[k]) * 1000 / max(tokens, 1) for k in after if k in before}
    return per_token, tokens, tokens / seconds if seconds else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=256)
    args = parser.parse_args()
    model = resolve_path(DEFAULT_MODEL, Path(".headrace").resolve())
    home = Path(tempfile.mkdtemp(prefix="headrace-bench-cpu-"))
    suite = start_bench_suite(home / "suite", model)
    try:
        prompts = Prompts()
        subject = bench_subject()
        token = suite.token(subject)
        unfiltered = suite.token(subject, "--tier", UNFILTERED_TIER)
        sides = {
            "gateway": through_gateway(suite.public, token),
            "gateway, no output rules": through_gateway(suite.public, unfiltered),
            "inference directly": engine_direct(f"127.0.0.1:{suite.service_ports['inference-0']}"),
        }
        sides["gateway"](prompts.next(), 32)  # warm, and find the decode thread
        processes = suite_processes(suite)
        results = {}
        for name, side in sides.items():
            results[name] = measure(side, processes, prompts, args.requests, args.max_tokens)
    finally:
        suite.stop()
    rows = sorted({k for per_token, _, _ in results.values() for k in per_token})
    print(f"ms of CPU per generated token ({args.requests} x {args.max_tokens} tokens, greedy)")
    print("| process | " + " | ".join(results) + " |")
    print("|---|" + "---|" * len(results))
    for row in rows:
        cells = [f"{results[name][0].get(row, 0.0):.3f}" for name in results]
        print(f"| {row} | " + " | ".join(cells) + " |")
    print("| tokens/s | " + " | ".join(f"{r[2]:.1f}" for r in results.values()) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
