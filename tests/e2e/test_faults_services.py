"""Auth, the sanitizer or the cache stopped (issue #9).

Auth and the sanitizer fail closed: while either is down, Generate gets UNAVAILABLE
at once, naming the service, and nothing is generated unchecked: a credential admitted
recently may have its first such request prefilled (speculation, issue 22), held in
inference and cancelled unreleased, counted as refused, and after that refusal its
requests are not prefilled at all; a stream under
way when the sanitizer dies stays filtered (the router filters in its own process
under the policy the sanitizer published), never lets unfiltered text through. The
cache fails open: requests are served without it. Each service is SIGKILLed; the
launcher restarts it after HEADRACE_RESTART_BACKOFF_SECONDS, set long enough here
for the checks to run while it is down, and requests succeed again once it is back.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from headrace.router.v1 import router_pb2, router_pb2_grpc
from headrace.types.v1 import types_pb2
from tests.support.faults import audit_of, bearer, log_events, until
from tests.support.suite import RunningSuite, running_suite

pytestmark = pytest.mark.e2e

RESTART_BACKOFF_S = 4.0
# The tiny model's greedy answer to STORY starts "dog want story dog did ...";
# the output filter redacts "dog", so any "dog" a client sees went unfiltered.
STORY = "Tell me a long story"
REDACT_DOG = {
    "id": "test.dog",
    "action": "redact",
    "terms": ["dog"],
    "whole_word": True,
    "placeholder": "[PET]",
    "directions": ["output"],
}


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[RunningSuite]:
    with running_suite(
        tmp_path_factory.mktemp("faults-services-home"),
        tiny_model,
        extra_env={
            "HEADRACE_RESTART_BACKOFF_SECONDS": str(RESTART_BACKOFF_S),
            "HEADRACE_RULES": json.dumps([REDACT_DOG]),
            # No Redis (a closed port): quotas and the cache in process, so that
            # nothing here waits on a Redis shared with other test runs.
            "HEADRACE_REDIS_URL": "redis://127.0.0.1:1/0",
        },
    ) as running:
        yield running


@pytest.fixture(scope="module")
def metadata(suite: RunningSuite) -> tuple[tuple[str, str]]:
    return bearer(suite.token("faults-tester"))


def request(prompt: str, max_tokens: int = 8, *, cache: bool = False) -> router_pb2.GenerateRequest:
    return router_pb2.GenerateRequest(
        prompt=prompt,
        bypass_cache=not cache,
        params=types_pb2.SamplingParams(max_tokens=max_tokens, temperature=0.0),
    )


def inference_calls(suite: RunningSuite) -> float:
    """Generate calls the inference replica has started."""
    return suite.rpcs_started("inference-0", "headrace.inference.v1.InferenceService", "Generate")


def speculations(suite: RunningSuite) -> float:
    """Speculate calls (prefills held until admission ends) inference has started."""
    return suite.rpcs_started("inference-0", "headrace.inference.v1.InferenceService", "Speculate")


def nothing_held(suite: RunningSuite) -> bool:
    return (
        suite.metric("inference-0", "headrace_inference_held_sequences", model="tiny") == 0
        and suite.metric("inference-0", "headrace_inference_busy_slots", model="tiny") == 0
    )


def kill(suite: RunningSuite, service: str) -> int:
    pid = suite.pid(service)
    os.kill(pid, signal.SIGKILL)
    return pid


def wait_until_served(
    stub: router_pb2_grpc.RouterServiceStub, metadata: tuple[tuple[str, str]]
) -> None:
    """Until Generate succeeds again (the launcher restarted the service)."""

    def served() -> bool:
        try:
            list(stub.Generate(request("are you back"), metadata=metadata, timeout=5))
        except grpc.RpcError:
            return False
        return True

    until(served, RESTART_BACKOFF_S + 20, "served again after the restart")


def assert_fails_closed(
    suite: RunningSuite,
    stub: router_pb2_grpc.RouterServiceStub,
    metadata: tuple[tuple[str, str]],
    service: str,
    label: str,
    speculates: bool | None = None,
) -> None:
    """Three requests while `service` is down: each UNAVAILABLE at once, naming it;
    none generated; at most the first prefilled (when its credential was admitted
    recently and not refused since: `speculates`, None when that depends on the tests
    run before), never released, and none after that refusal; each audited as
    refused, with no answer."""
    calls, prefills = inference_calls(suite), speculations(suite)
    refused = suite.metric(
        "router", "headrace_router_speculative_prefills_total", outcome="refused"
    )
    for i in range(3):
        rid = f"{label}-{i}"
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as info:
            list(
                stub.Generate(
                    request(f"{STORY} {i}"), metadata=(*metadata, ("x-request-id", rid)), timeout=10
                )
            )
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE, info.value
        assert service in info.value.details() and "retry" in info.value.details()
        # At once (typically ~10 ms; the margin is for a shared, loaded machine),
        # far from the 10 s deadline.
        assert time.monotonic() - started < 2.0
        audit = audit_of(suite.home, rid)
        assert audit["status"] == "UNAVAILABLE"
        assert "completion_tokens" not in audit and "response_summary" not in audit
    assert inference_calls(suite) == calls, "a request was generated unchecked"
    # The router counts what it started; inference may not have seen a call the
    # router cancelled at once.
    started = (
        suite.metric("router", "headrace_router_speculative_prefills_total", outcome="refused")
        - refused
    )
    assert started <= 1, "a credential refused moments ago still speculated"
    if speculates is not None:
        assert started == int(speculates)
    assert speculations(suite) - prefills <= started
    until(lambda: nothing_held(suite), 10, "no prefill left held in inference")


def test_auth_down_fails_closed_then_recovers(
    suite: RunningSuite, stub: router_pb2_grpc.RouterServiceStub, metadata: tuple
) -> None:
    list(stub.Generate(request("warm up"), metadata=metadata, timeout=30))
    pid = kill(suite, "auth")
    # The warm-up admitted the credential: the first request is prefilled (and
    # refused), the next two are not.
    assert_fails_closed(suite, stub, metadata, "auth", "no-auth", speculates=True)
    assert suite.pid("auth") == pid, "checked after the restart, not while auth was down"
    wait_until_served(stub, metadata)


def test_sanitizer_down_mid_stream_the_router_keeps_filtering_and_new_requests_fail_closed(
    suite: RunningSuite, stub: router_pb2_grpc.RouterServiceStub, metadata: tuple
) -> None:
    # The router filters output in its own process under the policy the sanitizer
    # published (issue #22): a stream under way keeps that policy, so it goes on,
    # filtered; a new request cannot be checked and fails closed.
    rid = "filtered-without-sanitizer"
    call = stub.Generate(
        request(STORY, 300), metadata=(*metadata, ("x-request-id", rid)), timeout=30
    )
    received = ""
    for message in call:  # until the filter has visibly redacted something
        received += message.text
        if "[PET]" in received:
            break
    pid = kill(suite, "sanitizer")
    messages = list(call)
    received += "".join(m.text for m in messages)
    assert messages[-1].finish_reason == types_pb2.FINISH_REASON_LENGTH
    assert received.count("[PET]") > 1
    assert not re.search(r"\bdog\b", received), "unfiltered text reached the client"
    audit = audit_of(suite.home, rid)
    assert audit["status"] == "OK"
    assert "dog" not in audit["response_summary"]

    assert_fails_closed(suite, stub, metadata, "sanitizer", "no-sanitizer")
    assert suite.pid("sanitizer") == pid, "checked after the restart, not while it was down"
    wait_until_served(stub, metadata)


def test_cache_down_mid_stream_the_response_completes_and_requests_are_served(
    suite: RunningSuite, stub: router_pb2_grpc.RouterServiceStub, metadata: tuple
) -> None:
    call = stub.Generate(
        request("cache me if you can", 400, cache=True), metadata=metadata, timeout=30
    )
    messages = [next(call) for _ in range(3)]
    pid = kill(suite, "cache")
    messages += list(call)
    assert messages[-1].finish_reason == types_pb2.FINISH_REASON_LENGTH
    assert messages[-1].usage.completion_tokens == 400
    # While the cache is down: served, fresh, without delay.
    started = time.monotonic()
    during = list(
        stub.Generate(request("while it is down", cache=True), metadata=metadata, timeout=10)
    )
    assert time.monotonic() - started < 2.0
    assert during[-1].finish_reason == types_pb2.FINISH_REASON_LENGTH
    assert not any(m.cached for m in during)
    assert suite.pid("cache") == pid, "checked after the restart, not while the cache was down"
    assert log_events(suite, "cache_lookup_failed") and log_events(suite, "cache_store_failed")
    # Once it is back, responses are cached again.
    until(lambda: suite.pid("cache") != pid, RESTART_BACKOFF_S + 5, "cache restarted")
    later = request("cache me later", cache=True)

    def replayed() -> bool:
        try:
            list(stub.Generate(later, metadata=metadata, timeout=5))
            return all(m.cached for m in stub.Generate(later, metadata=metadata, timeout=5))
        except grpc.RpcError:
            return False

    until(replayed, 20, "responses cached again")
