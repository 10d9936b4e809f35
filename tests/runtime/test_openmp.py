"""llama.cpp's OpenMP spin: set before libgomp loads in the inference process, never over
the user's own choice, and reported by doctor (services/runtime/openmp.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from headrace.services.runtime import openmp

# What a process that loads llama.cpp sees: inference (its engine imports llama_cpp at
# the top), or the cache (its semantic embedder loads through llama_params).
PROBE = """
import json, os, sys, importlib
importlib.import_module(sys.argv[1])
import llama_cpp  # loads libgomp, which reads the setting now
from headrace.services.runtime import openmp
print(json.dumps({
    "GOMP_SPINCOUNT": os.environ.get("GOMP_SPINCOUNT"),
    "runtime": openmp.loaded_runtime(),
    "openmp_build": "OPENMP = 1" in llama_cpp.llama_print_system_info().decode(),
}))
"""


def probe(module: str = "headrace.services.inference.engine", **env: str) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items() if k not in openmp.USER_VARIABLES}
    out = subprocess.run(
        [sys.executable, "-c", PROBE, module],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "module", ["headrace.services.inference.engine", "headrace.services.cache.semantic"]
)
def test_a_process_that_loads_llama_cpp_spins_briefly(module: str) -> None:
    seen = probe(module)
    assert seen["GOMP_SPINCOUNT"] == openmp.SPIN_COUNT
    if sys.platform == "linux":
        # An OpenMP build has its runtime loaded by now (GCC's: libgomp, which read the
        # setting as it loaded); a build without one uses ggml's own thread pool.
        assert (seen["runtime"] is not None) == seen["openmp_build"]


@pytest.mark.parametrize(
    ("env", "expected"),
    [({"GOMP_SPINCOUNT": "50"}, "50"), ({"OMP_WAIT_POLICY": "passive"}, None)],
)
def test_a_users_own_openmp_setting_is_kept(env: dict[str, str], expected: str | None) -> None:
    assert probe(**env)["GOMP_SPINCOUNT"] == expected


def test_apply_sets_only_an_unset_environment() -> None:
    mine: dict[str, str] = {}
    assert openmp.apply(mine) is True and mine == {"GOMP_SPINCOUNT": openmp.SPIN_COUNT}
    assert openmp.apply(mine) is False, "set once; a second call changes nothing"
    theirs = {"OMP_WAIT_POLICY": "active"}
    assert openmp.apply(theirs) is False and theirs == {"OMP_WAIT_POLICY": "active"}


def test_describe_names_the_runtime_and_whose_setting_it_is(tmp_path: Path) -> None:
    gomp, plain = tmp_path / "gomp", tmp_path / "plain"
    gomp.write_text("7f00-7f01 r-xp 0 0:0 0 /usr/lib/x86_64-linux-gnu/libgomp.so.1\n")
    plain.write_text("7f00-7f01 r-xp 0 0:0 0 /usr/lib/x86_64-linux-gnu/libc.so.6\n")
    assert openmp.loaded_runtime(gomp) == "libgomp"
    assert openmp.loaded_runtime(plain) is None
    assert openmp.loaded_runtime(tmp_path / "absent") is None
    mine: dict[str, str] = {}
    openmp.apply(mine)
    assert openmp.describe(mine, gomp) == (
        "libgomp, GOMP_SPINCOUNT=1000 (Headrace's default; set GOMP_SPINCOUNT or "
        "OMP_WAIT_POLICY to choose)"
    )
    assert openmp.describe({"GOMP_SPINCOUNT": "50"}, gomp) == "libgomp, GOMP_SPINCOUNT=50"
    assert openmp.describe({}, plain).startswith("no OpenMP runtime loaded")
