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
(no cost measured on an idle machine) and lets them sleep when the partner is not
running.

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

SPIN_COUNT = "1000"
"""Tens of microseconds of spinning (by the CPU's pause instruction), far longer than
the gap between two operations of a step; libgomp's default is 300,000. Measured on 2
cores (docs/benchmarks.md): 300 to 10,000 all decode as fast as the default on an idle
machine; beside a busy process 300 gave 32 tokens/s, 1,000 27, 3,000 19, 10,000 10
and the default 0.6. 1,000 leaves a margin for CPUs whose pause is shorter."""

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
