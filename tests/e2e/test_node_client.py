"""The Node client (clients/node, generated with buf + protoc-gen-es, Connect for
Node) streams a Generate through Envoy."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.suite import NODE_CLIENT, RunningSuite, run_node, running_suite

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
    # An empty HEADRACE_TOKEN is no token: the example sends no authorization.
    env = {"HEADRACE_TARGET": suite.public, "MAX_TOKENS": "12", "HEADRACE_TOKEN": token or ""}
    return run_node("example.js", "Hello from Node", env=env)


def test_the_node_example_streams_a_generation(suite: RunningSuite) -> None:
    result = run_example(suite, suite.token("node-client"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert "finish=LENGTH completion_tokens=12" in result.stderr


def test_the_node_example_reports_unauthenticated(suite: RunningSuite) -> None:
    result = run_example(suite, None)
    assert result.returncode == 2
    assert "missing credential" in result.stderr


def test_the_node_chat_example_streams_a_reply_to_a_conversation(
    suite: RunningSuite, tmp_path: Path
) -> None:
    schema = tmp_path / "schema.json"
    schema.write_text('{"type": "object", "properties": {"city": {"type": "string"}}}')
    env = {
        "HEADRACE_TARGET": suite.public,
        "HEADRACE_TOKEN": suite.token("node-chat"),
        "MAX_TOKENS": "8",
    }
    result = run_node("chat-example.js", "Where is Paris?", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() and "finish=LENGTH" in result.stderr
    assert "<|im_start|>" not in result.stdout
    constrained = run_node(
        "chat-example.js",
        "Where is Paris?",
        env={**env, "JSON_SCHEMA": str(schema), "MAX_TOKENS": "64"},
    )
    assert constrained.returncode == 0, constrained.stderr
    assert constrained.stdout.lstrip().startswith("{")
