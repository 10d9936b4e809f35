"""Generated code matches the protos, and the protos pass buf lint."""

from __future__ import annotations

import filecmp
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
GENERATED = REPO / "clients" / "python"


def _buf(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    return subprocess.run(
        [str(BIN / "buf"), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def test_buf_lint_passes() -> None:
    result = _buf("lint")
    assert result.returncode == 0, result.stdout + result.stderr


def test_generated_python_matches_protos(tmp_path: Path) -> None:
    result = _buf("generate", "-o", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    fresh = {
        p.relative_to(tmp_path / "clients" / "python")
        for p in (tmp_path / "clients" / "python").rglob("*")
        if p.is_file() and p.name.endswith((".py", ".pyi")) and p.stat().st_size > 0
    }
    committed = {
        p.relative_to(GENERATED)
        for p in GENERATED.rglob("*_pb2*")
        if p.is_file() and p.suffix in (".py", ".pyi")
    }
    assert fresh == committed, "run `make gen`: generated files differ from protos"
    drifted = [
        str(p)
        for p in sorted(fresh)
        if not filecmp.cmp(tmp_path / "clients" / "python" / p, GENERATED / p, shallow=False)
    ]
    assert drifted == [], f"run `make gen`: stale generated code {drifted}"


def test_generated_node_code_matches_protos(tmp_path: Path) -> None:
    import pytest

    if not (REPO / "clients" / "node" / "node_modules" / ".bin" / "protoc-gen-es").exists():
        pytest.skip("needs `make node` (npm ci in clients/node)")
    result = _buf("generate", "--template", "buf.gen.node.yaml", "-o", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    fresh_root = tmp_path / "clients" / "node" / "gen"
    committed_root = REPO / "clients" / "node" / "gen"
    fresh = {p.relative_to(fresh_root) for p in fresh_root.rglob("*") if p.is_file()}
    committed = {p.relative_to(committed_root) for p in committed_root.rglob("*") if p.is_file()}
    assert fresh == committed, "run `make gen-node`"
    drifted = [
        str(p)
        for p in sorted(fresh)
        if not filecmp.cmp(fresh_root / p, committed_root / p, shallow=False)
    ]
    assert drifted == [], f"run `make gen-node`: stale {drifted}"
