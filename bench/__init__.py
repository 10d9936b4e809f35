"""Benchmarks: `make bench` (python -m bench)."""

import os

from headrace.services.runtime import openmp

USER_SPIN = any(name in os.environ for name in openmp.USER_VARIABLES)
"""The user chose llama.cpp's OpenMP spin: every side runs with it."""

if not USER_SPIN:
    # The in-process side runs llama-cpp-python as its users run it, with libgomp's own
    # spin: libgomp reads the variable as it loads, here, and not again. The gateway's
    # inference sets its own (services/runtime/openmp.py); llama-server gets libgomp's
    # (bench.user_view); bench.contention compares the settings.
    os.environ["GOMP_SPINCOUNT"] = openmp.LIBGOMP_DEFAULT
    import llama_cpp  # noqa: F401

    del os.environ["GOMP_SPINCOUNT"]
