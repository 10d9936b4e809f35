"""Benchmarks: `make bench` (python -m bench)."""

import os

from headrace.services.runtime import openmp

USER_SPIN = openmp.user_chose()
"""The user chose llama.cpp's OpenMP spin: every side runs with it."""

if not USER_SPIN:
    # The in-process side runs llama-cpp-python as its users run it, with libgomp's own
    # spin: libgomp reads the variable as it loads, here, and not again. The gateway's
    # inference sets its own (services/runtime/openmp.py); llama-server gets libgomp's
    # (bench.user_view); bench.contention compares the settings.
    inherited = {k: os.environ.pop(k) for k in ("GOMP_SPINCOUNT", openmp.MARKER) if k in os.environ}
    os.environ["GOMP_SPINCOUNT"] = openmp.LIBGOMP_DEFAULT
    try:
        import llama_cpp  # noqa: F401
    finally:
        del os.environ["GOMP_SPINCOUNT"]
        os.environ.update(inherited)
