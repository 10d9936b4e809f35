"""`headrace doctor`: exit 0 on a healthy machine, WARN (with the fallback) for a Redis
that does not answer, FAIL (exit 1) for a missing model file or a port held elsewhere."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from headrace.services.runtime import openmp
from tests.support.ports import free_port, free_port_block

HEADRACE = str(Path(sys.executable).parent / "headrace")


def doctor(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = free_port_block(12)
    metrics = free_port_block(8)
    full_env = {
        **os.environ,
        "HEADRACE_HOME": str(home),
        "HEADRACE_CONFIG": str(home / "no-such-headrace.toml"),
        "HEADRACE_PUBLIC_PORT": str(base),
        "HEADRACE_INTERNAL_PORT": str(base + 1),
        "HEADRACE_ADMIN_PORT": str(base + 2),
        "HEADRACE_SERVICE_PORT_BASE": str(base + 3),
        "HEADRACE_METRICS_PORT_BASE": str(metrics),
        **env,
    }
    if "HEADRACE_MODELS" not in env:
        full_env.pop("HEADRACE_MODELS", None)  # the default registry
    return subprocess.run(
        [HEADRACE, "doctor", *args], env=full_env, capture_output=True, text=True, timeout=300
    )


@pytest.fixture
def home(tmp_path: Path, default_model: Path) -> Path:
    """A fresh home whose packaged model is the one already assembled (no 250 MB copy)."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "models").symlink_to(default_model.parent, target_is_directory=True)
    return home


def lines_of(result: subprocess.CompletedProcess[str], check: str) -> list[str]:
    return [line for line in result.stdout.splitlines() if f"  {check}" in line]


def test_doctor_on_a_healthy_machine_exits_0_after_a_real_decode(home: Path) -> None:
    result = doctor(home)
    assert result.returncode == 0, result.stdout + result.stderr
    decode = lines_of(result, "decode:")
    assert decode and decode[0].startswith("OK"), result.stdout
    assert "tok/s" in decode[0]
    for check in ("python:", "packages:", "llama.cpp system info:", "envoy config:", "ports:"):
        assert lines_of(result, check)[0].startswith("OK"), (check, result.stdout)
    extra = lines_of(result, "model gemma-3-270m: extra buffer types:")
    assert extra and "auto:" in extra[0]
    # The decode threads' OpenMP spin (the choice behind decoding on a busy machine).
    spin = lines_of(result, "llama.cpp OpenMP:")
    assert spin, result.stdout
    if "OPENMP = 1" in lines_of(result, "llama.cpp system info:")[0]:
        assert f"GOMP_SPINCOUNT={openmp.SPIN_COUNT} (Headrace's default" in spin[0], spin
    assert "0 FAIL" in result.stdout


def test_doctor_warns_of_a_redis_that_does_not_answer_and_names_the_fallback(home: Path) -> None:
    result = doctor(home, "--no-decode", HEADRACE_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    redis = lines_of(result, "redis:")
    assert redis and redis[0].startswith("WARN"), result.stdout
    assert "fall back to in-process stores" in redis[0]
    assert result.returncode == 0, "a WARN alone does not fail"


def test_doctor_fails_on_a_missing_model_file(home: Path, tmp_path: Path) -> None:
    missing = tmp_path / "gone.gguf"
    models = f'[{{"name": "gone", "path": "{missing}"}}]'
    result = doctor(home, "--no-decode", HEADRACE_MODELS=models)
    assert result.returncode == 1, result.stdout
    found = lines_of(result, "model gone: file:")
    assert found and found[0].startswith("FAIL") and str(missing) in found[0]
    assert "fix:" in result.stdout.split(found[0])[1].splitlines()[1]


def test_doctor_fails_on_a_port_held_by_something_else(home: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        result = doctor(home, "--no-decode", HEADRACE_PUBLIC_PORT=str(port))
    assert result.returncode == 1
    ports = lines_of(result, "ports:")
    assert ports and ports[0].startswith("FAIL") and f"public (Envoy) {port}" in ports[0]
