"""Output filtering in the router's process, under the policy the sanitizer publishes:
through Envoy, a response is cut at a deny term without any FilterStream call, and a
deny term added to headrace.toml while the suite runs reaches the router within a
second of the sanitizer loading it."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from headrace.router.v1 import router_pb2, router_pb2_grpc
from headrace.types.v1 import types_pb2
from tests.support.suite import RunningSuite, running_suite

pytestmark = pytest.mark.e2e
RELOAD_S = 0.1


def write_config(path: Path, deny: list[str]) -> None:
    path.write_text(f"[sanitizer]\ndeny_terms = {deny!r}\n".replace("'", '"'))
    stat = path.stat()  # a rewrite within the timestamp granularity still shows
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("output-policy-config") / "headrace.toml"
    write_config(path, ["zebra"])
    return path


@pytest.fixture(scope="module")
def suite(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, config: Path
) -> Iterator[RunningSuite]:
    with running_suite(
        tmp_path_factory.mktemp("output-policy-home"),
        tiny_model,
        extra_env={
            "HEADRACE_CONFIG": str(config),
            "HEADRACE_POLICY_RELOAD_SECONDS": str(RELOAD_S),
        },
    ) as running:
        yield running


def hello(suite: RunningSuite, stub: router_pb2_grpc.RouterServiceStub) -> list:
    # The tiny model answers "Hello world" with " got dog much …" at temperature 0.
    request = router_pb2.GenerateRequest(
        prompt="Hello world",
        bypass_cache=True,
        params=types_pb2.SamplingParams(max_tokens=16, temperature=0.0),
    )
    token = suite.token("policy-tester")
    return list(
        stub.Generate(request, metadata=(("authorization", f"Bearer {token}"),), timeout=30)
    )


def filter_streams(suite: RunningSuite) -> float:
    return suite.rpcs_started("sanitizer", "headrace.sanitizer.v1.SanitizerService", "FilterStream")


def test_a_deny_term_added_while_running_reaches_the_router_within_a_second(
    suite: RunningSuite, stub: router_pb2_grpc.RouterServiceStub, config: Path
) -> None:
    before = hello(suite, stub)
    assert "dog" in "".join(m.text for m in before), "not denied yet"
    assert before[-1].finish_reason != types_pb2.FINISH_REASON_CONTENT_FILTER
    updates = suite.metric("router", "headrace_router_output_policy_updates_total")

    write_config(config, ["zebra", "dog"])
    written = time.monotonic()
    while suite.metric("router", "headrace_router_output_policy_updates_total") == updates:
        assert time.monotonic() - written < 1.0 + RELOAD_S, "the router still has the old policy"
        time.sleep(0.02)

    after = hello(suite, stub)
    assert after[-1].finish_reason == types_pb2.FINISH_REASON_CONTENT_FILTER
    assert "dog" not in "".join(m.text for m in after)
    assert filter_streams(suite) == 0, "the router filtered in its own process"
    assert (
        suite.metric(
            "router", "headrace_router_output_rule_matches_total", rule="deny.terms", action="block"
        )
        >= 1
    )
