"""The Node client (clients/node, generated with buf + protoc-gen-es, Connect for
Node) streams a Generate through Envoy."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.suite import REPO, RunningSuite, running_suite

NODE_CLIENT = REPO / "clients" / "node"

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        shutil.which("node") is None or not (NODE_CLIENT / "node_modules").is_dir(),
        reason="needs node and `make node` (npm ci in clients/node)",
    ),
]


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[RunningSuite]:
    with running_suite(tmp_path_factory.mktemp("node-home"), tiny_model) as running:
        yield running


def run_example(suite: RunningSuite, token: str | None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HEADRACE_TARGET": suite.public, "MAX_TOKENS": "12"}
    env.pop("HEADRACE_TOKEN", None)
    if token:
        env["HEADRACE_TOKEN"] = token
    return subprocess.run(
        ["node", "example.js", "Hello from Node"],
        cwd=NODE_CLIENT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_node_example_streams_a_generation(suite: RunningSuite) -> None:
    result = run_example(suite, suite.token("node-client"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert "finish=LENGTH completion_tokens=12" in result.stderr


def test_the_node_example_reports_unauthenticated(suite: RunningSuite) -> None:
    result = run_example(suite, None)
    assert result.returncode == 2
    assert "missing credential" in result.stderr
