"""The one place that builds llama.cpp model parameters for every load in Headrace.

Why this exists: on Intel Xeons with AMX (`amx_tile` in /proc/cpuinfo), llama.cpp's
AMX "extra buffer types" repack Q4_K/Q6_K tensors at load
(`ggml_backend_amx_buffer_set_tensor: amx repack tensor ... of type q4_K`) and the
first decode of the default model then segfaults, in plain llama-cpp-python too.
`llama_model_params.use_extra_bufts = False` runs on those CPUs (measured 2026-12-01:
47 tok/s, first token 25 ms). Elsewhere the extra buffer types (the CPU repack of
Q4_0/IQ4_NL and friends into interleaved layouts) are a speed-up worth keeping, so
the choice is per model: `auto` (default) turns them off only where the CPU is known
to crash, `on` and `off` force it. docs/inference.md has the evidence.

The engine builds `llama_model_params` itself (`model_params`); the high-level
`llama_cpp.Llama` takes no argument for the field, so `load_llama` builds one with
llama.cpp's defaults patched for the duration of its constructor. Every other load
(the cache's embedder, the benchmarks, `headrace doctor`, the tests) goes through
one of the two.
"""

from __future__ import annotations

import contextlib
import os
import platform
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from headrace.services.runtime import openmp

if TYPE_CHECKING:
    import llama_cpp

# Every load goes through this module, and llama_cpp is imported lazily below, so the
# OpenMP spin is set before libgomp loads for the cache's embedder and finetune too
# (the inference package sets it itself: its engine imports llama_cpp first).
openmp.apply()

ExtraBufts = Literal["auto", "on", "off"]

# CPU flags under which llama.cpp's extra buffer types crash the default model.
# amx_tile: the AMX repack of Q4_K/Q6_K (llama-cpp-python 0.3.36, 2026-12-01).
CRASHING_FLAGS: dict[str, str] = {
    "amx_tile": "llama.cpp's AMX repack of Q4_K/Q6_K tensors segfaults the first decode",
}

_CPUINFO = Path("/proc/cpuinfo")


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The CPU's feature flags: x86 `flags`, or aarch64 `Features`, from /proc/cpuinfo.

    Empty where /proc/cpuinfo is absent (not Linux), which `auto` reads as "no
    known-bad feature"."""
    if cpuinfo is None:
        try:
            cpuinfo = _CPUINFO.read_text(errors="replace")
        except OSError:
            return frozenset()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            return frozenset(value.split())
    return frozenset()


@dataclass(frozen=True)
class ExtraBuftsChoice:
    """Whether a load uses llama.cpp's extra buffer types, and why (for logs and doctor)."""

    enabled: bool
    setting: ExtraBufts
    reason: str


def choose_extra_bufts(
    setting: ExtraBufts = "auto", flags: frozenset[str] | None = None
) -> ExtraBuftsChoice:
    """Resolve a model's `extra_buffer_types` setting on this CPU (or on `flags`)."""
    if setting == "on":
        return ExtraBuftsChoice(True, setting, "forced on by the model's extra_buffer_types")
    if setting == "off":
        return ExtraBuftsChoice(False, setting, "forced off by the model's extra_buffer_types")
    if setting != "auto":
        raise ValueError(f"extra_buffer_types must be auto, on or off, not {setting!r}")
    flags = cpu_flags() if flags is None else flags
    for flag, why in CRASHING_FLAGS.items():
        if flag in flags:
            return ExtraBuftsChoice(False, setting, f"auto: CPU has {flag} ({why})")
    machine = platform.machine() or "unknown"
    return ExtraBuftsChoice(True, setting, f"auto: no known-crashing CPU feature ({machine})")


def model_params(
    *, gpu_layers: int = 0, extra_bufts: ExtraBufts = "auto"
) -> llama_cpp.llama_model_params:
    """llama.cpp's default model parameters with Headrace's choices applied.

    gpu_layers < 0 offloads every layer."""
    import llama_cpp

    params = llama_cpp.llama_model_default_params()
    params.n_gpu_layers = 0x7FFFFFFF if gpu_layers < 0 else gpu_layers
    params.use_extra_bufts = choose_extra_bufts(extra_bufts).enabled
    return params


_PATCH_LOCK = threading.Lock()


def _defaults_setting(original: Any, enabled: bool) -> Any:
    """A `llama_model_default_params` that returns `original()` with use_extra_bufts set."""

    def patched() -> llama_cpp.llama_model_params:
        params = original()
        params.use_extra_bufts = enabled
        return params

    return patched


@contextlib.contextmanager
def _defaults_with(extra_bufts: ExtraBufts) -> Iterator[None]:
    """llama.cpp's `llama_model_default_params` with use_extra_bufts chosen, while held.

    `llama_cpp.Llama.__init__` reads the defaults through the module attribute, so the
    patch reaches it; the lock keeps two loads from racing on the attribute."""
    import llama_cpp.llama_cpp as low

    enabled = choose_extra_bufts(extra_bufts).enabled
    with _PATCH_LOCK:
        original = low.llama_model_default_params
        low.llama_model_default_params = _defaults_setting(original, enabled)
        try:
            yield
        finally:
            low.llama_model_default_params = original


def load_llama(
    model_path: str | os.PathLike[str], *, extra_bufts: ExtraBufts = "auto", **kwargs: Any
) -> llama_cpp.Llama:
    """`llama_cpp.Llama(model_path, **kwargs)` with the extra buffer types chosen."""
    import llama_cpp

    with _defaults_with(extra_bufts):
        return llama_cpp.Llama(model_path=str(model_path), **kwargs)


def apply_process_wide(extra_bufts: ExtraBufts = "auto") -> ExtraBuftsChoice:
    """Make every later llama.cpp load in this process use the choice: for programs
    Headrace does not construct itself (e.g. `llama_cpp.server` run as a peer)."""
    import llama_cpp.llama_cpp as low

    choice = choose_extra_bufts(extra_bufts)
    low.llama_model_default_params = _defaults_setting(
        low.llama_model_default_params, choice.enabled
    )
    return choice
