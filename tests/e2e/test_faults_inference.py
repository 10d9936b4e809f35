"""An inference replica killed mid-load (issue #9).

Two replicas serve long streams; one is killed with SIGKILL while it decodes. Every
stream must end - normally or with UNAVAILABLE and a message a person can act on,
never INTERNAL and never by hanging until its deadline - and requests sent right
after the kill must be served by the other replica within a second. The launcher
would restart the replica; its restart back-off is set long here so that all of
this is checked while the replica is still dead.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from headrace.router.v1 import router_pb2, router_pb2_grpc
from headrace.types.v1 import types_pb2
from tests.support.faults import bearer, log_events, wait_envoy_healthy
from tests.support.suite import RunningSuite, running_suite

pytestmark = pytest.mark.e2e

STREAMS = 4
STREAM_TOKENS = 4000
DEADLINE_S = 60.0
RESTART_BACKOFF_S = 8.0


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[RunningSuite]:
    with running_suite(
        tmp_path_factory.mktemp("faults-inference-home"),
        tiny_model,
        replicas=2,
        extra_env={
            "HEADRACE_RESTART_BACKOFF_SECONDS": str(RESTART_BACKOFF_S),
            # A tier with neither quotas nor output rules: the streams cost the
            # router no FilterStream round trip per piece and auth no Redis call,
            # so that on a 2-core machine the timings below measure the failover,
            # not this test's own load.
            "HEADRACE_TIER_POLICIES": json.dumps({"unlimited": {"redact": False}}),
        },
    ) as running:
        yield running


def request(prompt: str, max_tokens: int) -> router_pb2.GenerateRequest:
    return router_pb2.GenerateRequest(
        prompt=prompt,
        bypass_cache=True,
        params=types_pb2.SamplingParams(max_tokens=max_tokens, temperature=0.0),
    )


@dataclass
class Outcome:
    code: grpc.StatusCode = grpc.StatusCode.OK
    details: str = ""
    completion_tokens: int = 0


class LongStreams:
    """Streams in threads that read their first message, wait until `release()`
    (so that this process measures the probes, not its own threads reading
    thousands of messages), then read to the end, each under a deadline."""

    def __init__(self, stub: router_pb2_grpc.RouterServiceStub, metadata: tuple) -> None:
        self.outcomes = [Outcome() for _ in range(STREAMS)]
        self._stub = stub
        self._metadata = metadata
        self._started = threading.Barrier(STREAMS + 1)
        self._released = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(STREAMS)
        ]

    def start(self) -> None:
        """Start them all; returns once each has had its first message."""
        for thread in self._threads:
            thread.start()
        self._started.wait(timeout=30)

    def release(self) -> None:
        self._released.set()

    def join(self) -> bool:
        """True when every stream ended before its deadline (plus a margin)."""
        for thread in self._threads:
            thread.join(DEADLINE_S + 5)
        return not any(thread.is_alive() for thread in self._threads)

    def _run(self, i: int) -> None:
        outcome = self.outcomes[i]
        call = self._stub.Generate(
            request(f"long story {i}", STREAM_TOKENS),
            metadata=(*self._metadata, ("x-request-id", f"stream-{i}")),
            timeout=DEADLINE_S,
        )
        try:
            for n, message in enumerate(call):
                if n == 0:
                    self._started.wait(timeout=30)
                    self._released.wait(timeout=30)
                if message.finish_reason:
                    outcome.completion_tokens = message.usage.completion_tokens
        except grpc.RpcError as exc:
            outcome.code, outcome.details = exc.code(), exc.details() or ""


def probe(client: router_pb2_grpc.RouterServiceStub, metadata: tuple, name: str) -> float:
    """One short request; the seconds it took."""
    started = time.monotonic()
    answer = list(
        client.Generate(
            request("a short one", 8), metadata=(*metadata, ("x-request-id", name)), timeout=10
        )
    )
    assert answer[-1].finish_reason == types_pb2.FINISH_REASON_LENGTH
    return time.monotonic() - started


def busy(suite: RunningSuite, replica: str) -> float:
    return suite.metric(replica, "headrace_inference_busy_slots", model="tiny")


def test_streams_on_a_killed_replica_end_unavailable_and_new_requests_go_to_the_other(
    suite: RunningSuite, stub: router_pb2_grpc.RouterServiceStub
) -> None:
    metadata = bearer(suite.token("failover-tester", "--tier", "unlimited"))
    list(stub.Generate(request("warm up", 4), metadata=metadata, timeout=30))
    wait_envoy_healthy(suite.admin, "inference", 2)
    streams = LongStreams(stub, metadata)
    # The probes come from another client, on a connection of its own: on the
    # streams' one (which gRPC shares between channels to the same address), the
    # unread streams would use up the connection's flow-control window.
    with grpc.insecure_channel(
        suite.public, options=[("grpc.use_local_subchannel_pool", 1)]
    ) as channel:
        client = router_pb2_grpc.RouterServiceStub(channel)
        # What such a request takes on this machine now (the median of three).
        baseline = sorted(probe(client, metadata, f"before-{i}") for i in range(3))[1]
        try:
            streams.start()
            # Kill the replica decoding the most streams, while it decodes them.
            load = {r: busy(suite, r) for r in ("inference-0", "inference-1")}
            victim = max(load, key=load.__getitem__)
            assert load[victim] >= 1, f"no replica was decoding at the kill: {load}"
            victim_pid = suite.pid(victim)
            killed_at = datetime.now(UTC)
            os.kill(victim_pid, signal.SIGKILL)
            killed = time.monotonic()

            # Requests sent right after the kill are served by the other replica.
            latencies, served_at = [], []
            while time.monotonic() - killed < 1.5:
                latencies.append(probe(client, metadata, f"after-{len(latencies)}"))
                served_at.append(time.monotonic() - killed)
            restarted_meanwhile = suite.pid(victim) != victim_pid
        finally:
            streams.release()
    print(f"a short request took {baseline:.3f} s before the kill; after it: {latencies}")
    # The first within a second of the kill, and requests after it as fast - or,
    # on a machine so loaded that the same request took more than a third of a
    # second before the kill, within three times as long. (Single requests on a
    # shared 2-core machine sometimes stall for other processes; so the bound is
    # on the first and the median, and on every one only that nothing hangs.)
    bound = max(1.0, 3 * baseline)
    assert served_at[0] < bound, (served_at[0], baseline)
    assert sorted(latencies)[len(latencies) // 2] < bound, (latencies, baseline)
    assert max(latencies) < 5.0, latencies

    assert streams.join(), "a stream hung"
    outcomes = streams.outcomes
    cut = {i for i, o in enumerate(outcomes) if o.code != grpc.StatusCode.OK}
    assert cut, "no stream was on the killed replica"
    for i in cut:
        assert outcomes[i].code == grpc.StatusCode.UNAVAILABLE, outcomes[i]
        assert "inference" in outcomes[i].details, outcomes[i].details
        assert "retry" in outcomes[i].details, outcomes[i].details
    for i in set(range(STREAMS)) - cut:
        assert outcomes[i].completion_tokens == STREAM_TOKENS
    # The router ended each cut stream at once (its client read the error later).
    ended = {
        line["request_id"]: datetime.fromisoformat(line["timestamp"])
        for line in log_events(suite, "request_finished", service="router")
        if line.get("request_id", "").startswith("stream-")
    }
    for i in cut:
        assert (ended[f"stream-{i}"] - killed_at).total_seconds() < 2.0, "a cut stream lingered"

    # All of it happened while the replica was dead (the launcher restarts it later).
    assert not restarted_meanwhile
    assert log_events(suite, "process_exited_restarting", process=victim)
