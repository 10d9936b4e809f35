"""`make load`'s short version: locust against a suite with 2 inference replicas."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.suite import REPO

pytestmark = pytest.mark.e2e


def test_a_short_load_run_has_no_unexpected_errors_and_uses_both_replicas(
    tiny_model: Path, tmp_path: Path
) -> None:
    figures = tmp_path / "load.json"
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.load",
            "--model",
            str(tiny_model),
            "--users",
            "4",
            "--duration",
            "5",
            "--max-tokens",
            "8",
            "--json",
            str(figures),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for line in (
        "throughput, requests/s",
        "latency p99",
        "time to first token p99",
        "unexpected errors",
    ):
        assert line in out.stdout
    result = json.loads(figures.read_text())
    assert result["requests"] >= 20 and result["unexpected"] == 0
    assert result["tokens"] > 0 and result["cached"] > 0, "repeated prompts hit the cache"
    # Expected refusals happened and were not counted as errors.
    assert any(k.startswith("injection:PERMISSION_DENIED") for k in result["codes"])
    assert all(n > 0 for n in result["replicas"].values()) and len(result["replicas"]) == 2
    # Bounded: 5 s of load plus start and stop, far from the 120 s limit.
    assert result["seconds"] < 30


def test_load_refuses_a_remote_target() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench.load", "--target", "10.1.2.3:8080"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0 and "not loopback" in out.stderr
