"""Batch jobs on a durable RabbitMQ queue: results survive the worker being killed."""

from __future__ import annotations

import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from headrace.router.v1 import router_pb2, router_pb2_grpc
from headrace.types.v1 import types_pb2
from tests.support.suite import RunningSuite, running_suite


def answers(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not (answers(5672) and answers(6379)), reason="needs RabbitMQ and Redis"),
]


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[RunningSuite]:
    with running_suite(
        tmp_path_factory.mktemp("batch-home"),
        tiny_model,
        extra_env={"HEADRACE_BATCH_PREFETCH": "1"},
    ) as running:
        yield running


def test_a_batch_survives_its_worker_being_killed_halfway(
    suite: RunningSuite, stub: router_pb2_grpc.RouterServiceStub
) -> None:
    metadata = (("authorization", f"Bearer {suite.token('batcher')}"),)
    prompts = [f"Batch prompt number {i}" for i in range(20)]
    submitted = stub.SubmitBatch(
        router_pb2.SubmitBatchRequest(
            prompts=prompts, params=types_pb2.SamplingParams(max_tokens=300, temperature=0.0)
        ),
        metadata=metadata,
        timeout=30,
    )
    assert submitted.total == 20
    batch = router_pb2.GetBatchRequest(batch_id=submitted.batch_id)

    def progress() -> router_pb2.GetBatchResponse:
        deadline = time.monotonic() + 30
        while True:
            try:
                return stub.GetBatch(batch, metadata=metadata, timeout=5)
            except grpc.RpcError as exc:  # the router is restarting
                assert exc.code() == grpc.StatusCode.UNAVAILABLE and time.monotonic() < deadline
                time.sleep(0.2)

    deadline = time.monotonic() + 60
    while progress().done < 5:
        assert time.monotonic() < deadline, "the batch does not progress"
        time.sleep(0.05)
    halfway = progress().done
    assert halfway < 20, "the batch finished before the worker could be killed"
    os.kill(suite.pid("router"), signal.SIGKILL)

    deadline = time.monotonic() + 120
    while (state := progress()).state != router_pb2.BATCH_STATE_DONE:
        assert time.monotonic() < deadline, f"stuck at {state.done}/20 after the restart"
        time.sleep(0.2)
    indexes = [r.index for r in state.results]
    assert sorted(indexes) == list(range(20)), "every item has exactly one result"
    assert all(r.finish_reason == types_pb2.FINISH_REASON_LENGTH and r.text for r in state.results)
    assert "process_exited_restarting" in suite.log()

    watched = [
        m.result.index
        for m in stub.WatchBatch(
            router_pb2.WatchBatchRequest(batch_id=submitted.batch_id), metadata=metadata, timeout=30
        )
    ]
    assert sorted(watched) == list(range(20))


def test_bad_batches_are_refused_and_batches_are_private(
    suite: RunningSuite, stub: router_pb2_grpc.RouterServiceStub
) -> None:
    metadata = (("authorization", f"Bearer {suite.token('owner')}"),)
    for request in (
        router_pb2.SubmitBatchRequest(),
        router_pb2.SubmitBatchRequest(prompts=["ok", "  "]),
        router_pb2.SubmitBatchRequest(
            prompts=["ok"], params=types_pb2.SamplingParams(temperature=9)
        ),
    ):
        with pytest.raises(grpc.RpcError) as info:
            stub.SubmitBatch(request, metadata=metadata, timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    submitted = stub.SubmitBatch(
        router_pb2.SubmitBatchRequest(
            prompts=["hello"], params=types_pb2.SamplingParams(max_tokens=2)
        ),
        metadata=metadata,
        timeout=10,
    )
    other = (("authorization", f"Bearer {suite.token('someone-else')}"),)
    with pytest.raises(grpc.RpcError) as info:
        stub.GetBatch(
            router_pb2.GetBatchRequest(batch_id=submitted.batch_id), metadata=other, timeout=10
        )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
