"""Fewer messages per token when the client is behind: RouterService.Generate sends the
text produced while its consumer was busy in one message; the text, finish reason and
usage the client assembles are unchanged, and a consumer that keeps up still gets one
message per piece. Also a policy watch that is lost refuses the request (fail closed)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from headrace.router.v1 import router_pb2
from headrace.services.router.backends import Usage
from headrace.services.router.batch_jobs import BatchJobs
from headrace.services.router.servicer import RouterServicer
from headrace.services.runtime.errors import Unavailable
from headrace.types.v1 import types_pb2
from tests.router.fakes import Fakes, answer

PIECES = [f"tok{i} " for i in range(40)]


class _Context:
    """Stands in for grpc.aio.ServicerContext."""

    def __init__(self) -> None:
        self.trailers: tuple = ()

    def invocation_metadata(self) -> tuple:
        return (("authorization", "Bearer t"),)

    def time_remaining(self) -> float:
        return 10.0

    def set_trailing_metadata(self, trailers: tuple) -> None:
        self.trailers = trailers


def servicer(fakes: Fakes, tmp_path: Path) -> RouterServicer:
    orchestrator = fakes.orchestrator(tmp_path, task_rules=[], tasks={"t": {}})
    return RouterServicer(orchestrator, BatchJobs.__new__(BatchJobs))


def request() -> router_pb2.GenerateRequest:
    return router_pb2.GenerateRequest(
        prompt="hello", task="t", params=types_pb2.SamplingParams(temperature=0.0)
    )


async def read(servicer: RouterServicer, delay: float) -> list[router_pb2.GenerateResponse]:
    out = []
    async for message in servicer.Generate(request(), _Context()):  # type: ignore[arg-type]
        out.append(message)
        await asyncio.sleep(delay)
    return out


async def test_a_slow_client_gets_fewer_messages_with_the_same_text_and_usage(
    tmp_path: Path,
) -> None:
    fakes = Fakes()
    fakes.sanitizer.output_filtered = True  # through the (fake) output filter too
    fakes.inference.default = answer(*PIECES, usage=Usage(3, 40))
    messages = await read(servicer(fakes, tmp_path), delay=0.02)

    assert len(messages) < len(PIECES) / 4, "what waited for the client went together"
    assert "".join(m.text for m in messages) == "".join(PIECES)
    last = messages[-1]
    assert last.finish_reason == types_pb2.FINISH_REASON_STOP
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (3, 40)
    assert all(m.finish_reason == 0 and not m.HasField("usage") for m in messages[:-1])


async def test_a_client_that_keeps_up_gets_a_message_per_piece(tmp_path: Path) -> None:
    fakes = Fakes()

    async def paced(*args: object) -> object:
        for piece in answer(*PIECES[:5]):
            yield piece
            await asyncio.sleep(0.01)  # slower than the client reads

    fakes.inference.generate = paced  # type: ignore[method-assign,assignment]
    messages = await read(servicer(fakes, tmp_path), delay=0)
    assert [m.text for m in messages] == [*PIECES[:5], ""]


async def test_a_router_that_lost_the_policy_watch_refuses_unavailable(tmp_path: Path) -> None:
    fakes = Fakes()
    fakes.sanitizer.output_error = Unavailable("the output policy is not known to be current")
    with pytest.raises(Unavailable, match="not known to be current"):
        await read(servicer(fakes, tmp_path), delay=0)
    assert fakes.inference.asked == [], "nothing was generated"
