"""The router settles each request's token reservation with the next Authorize when one
comes soon (one auth call fewer per request), else alone after a short delay, and never
loses one at shutdown."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from headrace.auth.v1 import auth_pb2
from headrace.services.router.backends import AuthClient, Principal
from headrace.services.runtime.errors import Unavailable

DELAY = 0.05


class Failed(grpc.aio.AioRpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        super().__init__(code, grpc.aio.Metadata(), grpc.aio.Metadata(), details="down")


class Stub:
    """Auth's stub: what each call carried."""

    def __init__(self) -> None:
        self.authorized: list[auth_pb2.AuthorizeRequest] = []
        self.recorded: list[auth_pb2.RecordUsageRequest] = []
        self.error: grpc.aio.AioRpcError | None = None

    async def Authorize(self, request: auth_pb2.AuthorizeRequest, **kw: Any) -> Any:
        self.authorized.append(request)
        if self.error is not None:
            raise self.error
        return auth_pb2.AuthorizeResponse(subject="alice", tier="free", reserved_tokens=64)

    async def RecordUsage(self, request: auth_pb2.RecordUsageRequest, **kw: Any) -> Any:
        self.recorded.append(request)
        return auth_pb2.RecordUsageResponse()


ALICE = Principal("alice", "free", (), 64)


def used(requests: Any) -> list[int]:
    return [r.used_tokens for r in requests]


async def test_a_settlement_goes_with_the_next_authorize_when_it_comes_soon() -> None:
    stub = Stub()
    auth = AuthClient(stub, 5.0, DELAY)  # type: ignore[arg-type]
    auth.settle(ALICE, 10)
    auth.settle(ALICE, 20)
    await auth.authorize("key", 5.0, reserve_tokens=64)
    assert used(stub.authorized[0].settlements) == [10, 20]
    await asyncio.sleep(DELAY * 3)
    assert stub.recorded == [], "nothing sent twice"
    await auth.authorize("key", 5.0)
    assert list(stub.authorized[1].settlements) == []


async def test_a_settlement_with_no_authorize_to_ride_on_goes_alone_after_the_delay() -> None:
    stub = Stub()
    auth = AuthClient(stub, 5.0, DELAY)  # type: ignore[arg-type]
    auth.settle(ALICE, 10)
    await asyncio.sleep(DELAY / 5)
    assert stub.recorded == [], "it waits for an Authorize a moment"
    await asyncio.sleep(DELAY * 3)
    assert used(stub.recorded) == [10]
    assert stub.recorded[0].reserved_tokens == 64 and stub.recorded[0].subject == "alice"


async def test_closing_sends_what_waits_at_once() -> None:
    stub = Stub()
    auth = AuthClient(stub, 5.0, 60.0)  # type: ignore[arg-type]
    auth.settle(ALICE, 7)
    await asyncio.wait_for(auth.close(), 1)
    assert used(stub.recorded) == [7]


async def test_zero_delay_sends_each_settlement_at_once() -> None:
    stub = Stub()
    auth = AuthClient(stub, 5.0, 0.0)  # type: ignore[arg-type]
    auth.settle(ALICE, 3)
    await asyncio.sleep(0.01)
    assert used(stub.recorded) == [3]


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNAVAILABLE])
async def test_settlements_an_authorize_carried_go_again_when_it_failed(
    code: grpc.StatusCode,
) -> None:
    # Whether auth applied them is unknown to the router (a verdict may come from Envoy
    # as well): they go again with the same ids, which auth applies once.
    stub = Stub()
    stub.error = Failed(code)
    auth = AuthClient(stub, 5.0, DELAY)  # type: ignore[arg-type]
    auth.settle(ALICE, 10)
    with pytest.raises(Exception) as info:
        await auth.authorize("key", 5.0)
    if code == grpc.StatusCode.UNAVAILABLE:
        assert isinstance(info.value, Unavailable)
    [carried] = stub.authorized[0].settlements
    await asyncio.sleep(DELAY * 3)
    [alone] = stub.recorded
    assert alone.settlement_id == carried.settlement_id and alone.used_tokens == 10


async def test_settlements_of_an_authorize_cancelled_with_its_client_are_not_lost() -> None:
    stub = Stub()
    entered = asyncio.Event()

    async def hanging(request: auth_pb2.AuthorizeRequest, **kw: Any) -> Any:
        stub.authorized.append(request)
        entered.set()
        await asyncio.sleep(60)

    stub.Authorize = hanging  # type: ignore[method-assign]
    auth = AuthClient(stub, 5.0, DELAY)  # type: ignore[arg-type]
    auth.settle(ALICE, 10)
    call = asyncio.create_task(auth.authorize("key", 5.0))
    await entered.wait()
    call.cancel()  # the client went away while auth was being asked
    with pytest.raises(asyncio.CancelledError):
        await call
    await asyncio.sleep(DELAY * 3)
    assert used(stub.recorded) == [10]
    assert stub.recorded[0].settlement_id == stub.authorized[0].settlements[0].settlement_id


async def test_each_settlement_has_its_own_id() -> None:
    stub = Stub()
    auth = AuthClient(stub, 5.0, DELAY)  # type: ignore[arg-type]
    auth.settle(ALICE, 1)
    auth.settle(ALICE, 2)
    await auth.authorize("key", 5.0)
    ids = [s.settlement_id for s in stub.authorized[0].settlements]
    assert len(set(ids)) == 2 and all(len(i) == 32 for i in ids)
