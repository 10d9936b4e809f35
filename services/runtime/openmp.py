"""How long llama.cpp's OpenMP workers spin before they sleep.

llama-cpp-python builds ggml with OpenMP wherever the compiler has it (GCC: libgomp).
A decode step is a few hundred operations, each ending at a barrier where libgomp's
workers spin up to GOMP_SPINCOUNT iterations before they sleep: 300,000 by default
when there are no more threads than cores (milliseconds of spinning). Inference runs
as many decode threads as cores, so when any other process on the machine is busy, a
worker whose partner has lost its core spins away its own time slice at barrier after
barrier, and decoding collapses: on 2 cores with one busy process beside it, 0.5 to 1
tokens/s where one thread alone decodes 33 (docs/benchmarks.md, `python -m
bench.contention`). A short spin keeps the workers hot between back-to-back operations
and lets them sleep when the partner is not running; too short a spin costs a prefill,
whose operations are uneven enough that workers fall asleep at many of its barriers
and pay a wake-up at each (see SPIN_COUNT).

libgomp reads these variables once, when it is loaded, so `apply()` must run before
`llama_cpp` is first imported: the inference package and llama_params (every other
load) call it on import. A user's own GOMP_SPINCOUNT or OMP_WAIT_POLICY is left as it
is. Builds without OpenMP (ggml's own thread pool: clang on macOS, some ARM builds)
ignore the variables.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from pathlib import Path

SPIN_COUNT = "3000"
"""Tens of microseconds of spinning (an iteration is a load and the CPU's pause
instruction: 10 ns on the Xeon of 2026-12-07 evening, up to ~50 ns on CPUs whose pause
is long), longer than a worker waits at most barriers of a step; libgomp's default is
300,000. Measured on 2 cores (docs/benchmarks.md, `bench.contention`, `bench.user_view`):
decode on an idle machine is the same from 300 to 10,000; a **prefill** is not: in the
inference process 1,000 gave the first token in 76-79 ms, 1,500 69, 2,000 63, 3,000 and
more 56-57 (libgomp's default 58), against llama-cpp-python's 62-65 in process, so 1,000
(this setting until then) cost a fifth of every first token on that machine. Beside a
busy process 300 gave 32 tokens/s, 1,000 18-27, 3,000 15-19, 10,000 10 and the default
0.5-0.6: 3,000 gives up a fifth of 1,000's decode beside a CPU-bound neighbour for the
idle prefill, and keeps 25 times the default's."""

LIBGOMP_DEFAULT = "300000"
"""libgomp's own spin count with no more threads than cores (OMP_WAIT_POLICY unset)."""

USER_VARIABLES = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")
MARKER = "HEADRACE_OPENMP_DEFAULT"
"""Set beside GOMP_SPINCOUNT by apply(): the value is Headrace's, not the user's. Child
processes inherit both, so a service started by another still tells them apart."""


def user_chose(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the user set the spin or the wait policy (Headrace's own setting,
    inherited from a parent process, does not count)."""
    if "OMP_WAIT_POLICY" in environ:
        return True
    spin = environ.get("GOMP_SPINCOUNT")
    return spin is not None and not (environ.get(MARKER) == "1" and spin == SPIN_COUNT)


def apply(environ: MutableMapping[str, str] = os.environ) -> bool:
    """Set GOMP_SPINCOUNT unless the user chose or it is already set; True when set here."""
    if user_chose(environ) or "GOMP_SPINCOUNT" in environ:
        return False
    environ["GOMP_SPINCOUNT"] = SPIN_COUNT
    environ[MARKER] = "1"
    return True


def without_settings(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """A copy of the environment with no spin setting, the user's or Headrace's."""
    return {k: v for k, v in environ.items() if k not in (*USER_VARIABLES, MARKER)}


def loaded_runtime(maps: Path = Path("/proc/self/maps")) -> str | None:
    """The OpenMP library this process has loaded (libgomp, libomp, libiomp5), "" when
    none is loaded (yet), None when there is no /proc to tell (not Linux)."""
    try:
        text = maps.read_text()
    except OSError:
        return None
    for name in ("libgomp", "libiomp5", "libomp"):
        if f"/{name}" in text:
            return name
    return ""


def describe(environ: Mapping[str, str] = os.environ, maps: Path = Path("/proc/self/maps")) -> str:
    """One line for `headrace doctor`: the runtime and the spin settings inference uses."""
    runtime = loaded_runtime(maps)
    chosen = {name: environ[name] for name in USER_VARIABLES if name in environ}
    ours = not user_chose(environ)
    settings = ", ".join(f"{k}={v}" for k, v in (chosen or {"GOMP_SPINCOUNT": SPIN_COUNT}).items())
    if ours:
        settings += " (Headrace's default; set GOMP_SPINCOUNT or OMP_WAIT_POLICY to choose)"
    if runtime is None:
        return f"OpenMP runtime unknown (no /proc here): {settings}"
    if not runtime:
        return f"no OpenMP runtime loaded (ggml's own thread pool): {settings} has no effect"
    if runtime != "libgomp" and "OMP_WAIT_POLICY" not in chosen:
        return f"{runtime}: its own wait policy (GOMP_SPINCOUNT is libgomp's)"
    return f"{runtime}, {settings}"
