"""Fixtures shared by the end-to-end tests (each module starts its own suite)."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest

from headrace.router.v1 import router_pb2_grpc
from tests.support.faults import PrivateRedis
from tests.support.suite import RunningSuite


@pytest.fixture(scope="module")
def stub(suite: RunningSuite) -> Iterator[router_pb2_grpc.RouterServiceStub]:
    """A RouterService stub on the module's suite, through Envoy's public listener."""
    with grpc.insecure_channel(suite.public) as channel:
        yield router_pb2_grpc.RouterServiceStub(channel)


@pytest.fixture(scope="module")
def redis_server() -> Iterator[PrivateRedis]:
    """A redis-server of the module's own (modules that use it skip without one)."""
    server = PrivateRedis()
    server.start()
    yield server
    server.kill()  # a no-op if the test left it dead
