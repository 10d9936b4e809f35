"""llama.cpp's OpenMP spin: set before libgomp loads in every process that loads llama.cpp,
never over the user's own choice, and reported by doctor (services/runtime/openmp.py).

libgomp prints the settings it read as it loaded when OMP_DISPLAY_ENV=VERBOSE, so these
tests see what it actually uses, not only what the environment says afterwards."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from headrace.services.runtime import openmp

# What a process that loads llama.cpp sees: inference (its engine imports llama_cpp at
# the top), the cache (its semantic embedder loads through llama_params), the bench
# (its in-process side keeps libgomp's own spin).
PROBE = """
import json, os, sys, importlib
importlib.import_module(sys.argv[1])
import llama_cpp
from headrace.services.runtime import openmp
print(json.dumps({
    "GOMP_SPINCOUNT": os.environ.get("GOMP_SPINCOUNT"),
    "runtime": openmp.loaded_runtime(),
    "openmp_build": "OPENMP = 1" in llama_cpp.llama_print_system_info().decode(),
}))
"""


def probe(module: str, **env: str) -> tuple[dict[str, object], str | None]:
    """What the process reports, and the spin count libgomp read as it loaded (None
    when no libgomp printed one)."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE, module],
        env={**openmp.without_settings(), "OMP_DISPLAY_ENV": "VERBOSE", **env},
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    read = re.search(r"GOMP_SPINCOUNT = '(\d+)'", out.stderr)
    return json.loads(out.stdout.strip().splitlines()[-1]), read.group(1) if read else None


@pytest.mark.parametrize(
    "module", ["headrace.services.inference.engine", "headrace.services.cache.semantic"]
)
def test_a_process_that_loads_llama_cpp_spins_briefly(module: str) -> None:
    seen, read = probe(module)
    assert seen["GOMP_SPINCOUNT"] == openmp.SPIN_COUNT
    if sys.platform == "linux":
        # An OpenMP build has its runtime loaded by now; one without uses ggml's pool.
        assert bool(seen["runtime"]) == seen["openmp_build"]
    if seen["runtime"] == "libgomp":
        assert read == openmp.SPIN_COUNT, "libgomp loaded before the setting was made"


def test_the_benchs_in_process_side_keeps_libgomps_own_spin() -> None:
    seen, read = probe("bench.user_view")
    if seen["runtime"] == "libgomp":
        assert read == openmp.LIBGOMP_DEFAULT
    # The suite it starts (the gateway's inference) inherits Headrace's, as a user's does.
    assert seen["GOMP_SPINCOUNT"] == openmp.SPIN_COUNT


@pytest.mark.parametrize(
    ("env", "expected"),
    [({"GOMP_SPINCOUNT": "50"}, "50"), ({"OMP_WAIT_POLICY": "passive"}, None)],
)
def test_a_users_own_openmp_setting_is_kept(env: dict[str, str], expected: str | None) -> None:
    seen, read = probe("headrace.services.inference.engine", **env)
    assert seen["GOMP_SPINCOUNT"] == expected
    if expected is not None and seen["runtime"] == "libgomp":
        assert read == expected


def test_headraces_setting_inherited_by_a_child_is_still_headraces() -> None:
    parent: dict[str, str] = {}
    assert openmp.apply(parent) is True
    assert parent == {"GOMP_SPINCOUNT": openmp.SPIN_COUNT, openmp.MARKER: "1"}
    child = dict(parent)  # what a process started from it inherits
    assert openmp.apply(child) is False and not openmp.user_chose(child)
    assert openmp.user_chose({"GOMP_SPINCOUNT": openmp.SPIN_COUNT}), "no marker: the user's"
    assert openmp.user_chose({"GOMP_SPINCOUNT": "50", openmp.MARKER: "1"})
    theirs = {"OMP_WAIT_POLICY": "active"}
    assert openmp.apply(theirs) is False and theirs == {"OMP_WAIT_POLICY": "active"}
    assert openmp.without_settings({**parent, "PATH": "/bin"}) == {"PATH": "/bin"}


def test_describe_names_the_runtime_and_whose_setting_it_is(tmp_path: Path) -> None:
    gomp, plain = tmp_path / "gomp", tmp_path / "plain"
    gomp.write_text("7f00-7f01 r-xp 0 0:0 0 /usr/lib/x86_64-linux-gnu/libgomp.so.1\n")
    plain.write_text("7f00-7f01 r-xp 0 0:0 0 /usr/lib/x86_64-linux-gnu/libc.so.6\n")
    assert openmp.loaded_runtime(gomp) == "libgomp"
    assert openmp.loaded_runtime(plain) == ""
    assert openmp.loaded_runtime(tmp_path / "absent") is None
    mine: dict[str, str] = {}
    openmp.apply(mine)
    assert openmp.describe(mine, gomp) == (
        f"libgomp, GOMP_SPINCOUNT={openmp.SPIN_COUNT} (Headrace's default; set GOMP_SPINCOUNT or "
        "OMP_WAIT_POLICY to choose)"
    )
    assert openmp.describe({"GOMP_SPINCOUNT": "50"}, gomp) == "libgomp, GOMP_SPINCOUNT=50"
    assert openmp.describe({}, plain).startswith("no OpenMP runtime loaded")
    assert openmp.describe({}, tmp_path / "absent").startswith("OpenMP runtime unknown")
