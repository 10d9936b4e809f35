"""The batch worker: every item gets one result, even when delivered twice."""

from __future__ import annotations

import asyncio
from typing import Any

from headrace.services.router.batch_queue import (
    BatchItem,
    BatchMeta,
    BatchWorker,
    MemoryQueue,
    MemoryResults,
)


def item(index: int) -> BatchItem:
    return BatchItem("b1", index, f"p{index}", "", "", {}, "s", "free")


async def test_each_item_is_run_and_stored_once_even_if_delivered_twice() -> None:
    runs: list[int] = []

    async def run(it: BatchItem) -> dict[str, Any]:
        runs.append(it.index)
        return {"text": f"t{it.index}"}

    results = MemoryResults()
    await results.create(BatchMeta("b1", "s", 3))
    worker = BatchWorker(MemoryQueue(prefetch=1), results, run)
    for index in (0, 1, 1, 2, 0):  # redeliveries
        await worker.handle(item(index))
    assert sorted(runs) == [0, 1, 2]
    assert {i: r["text"] for i, r in (await results.results("b1")).items()} == {
        0: "t0",
        1: "t1",
        2: "t2",
    }


async def test_a_failing_item_is_retried_by_the_in_process_queue() -> None:
    attempts: list[int] = []
    done = asyncio.Event()

    async def run(it: BatchItem) -> dict[str, Any]:
        attempts.append(it.index)
        if len(attempts) == 1:
            raise RuntimeError("inference unavailable")
        done.set()
        return {"text": "ok"}

    results = MemoryResults()
    queue = MemoryQueue(prefetch=1)
    worker = BatchWorker(queue, results, run)
    worker.start()
    await queue.publish([item(0)])
    await asyncio.wait_for(done.wait(), 5)
    await worker.close()
    assert attempts == [0, 0]
    assert (await results.results("b1"))[0] == {"text": "ok"}
