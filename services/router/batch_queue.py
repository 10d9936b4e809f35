"""Batch jobs for bursts: many prompts on a durable queue, run in the background.

SubmitBatch writes the batch's description to the result store, then publishes one
message per item to a durable RabbitMQ queue (persistent messages, publisher
confirms: SubmitBatch returns only when the broker has them). Workers consume with a
prefetch limit, run each item through the same path as Generate (sanitizer, cache,
inference, output filter) and acknowledge a message only after its result is stored;
a worker that dies leaves its unacknowledged items to be redelivered. Results are
written with HSETNX, so an item redelivered after its result was stored is not run
or stored twice. Results live in Redis (they outlive a router restart); with no
RabbitMQ, an in-process queue serves, and with no Redis an in-process store: both
say so in the log, and neither survives a restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import aio_pika
import redis.asyncio as redis

from headrace.services.runtime.logs import get_logger
from headrace.services.runtime.redis_client import connect_redis

log = get_logger(__name__)

KEY_PREFIX = "headrace:batch:v1:"


@dataclass
class BatchItem:
    """One prompt of a batch, as it travels on the queue."""

    batch_id: str
    index: int
    prompt: str
    model: str
    task: str
    params: dict[str, Any]
    subject: str
    tier: str

    def encode(self) -> bytes:
        return json.dumps(asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, body: bytes) -> BatchItem:
        return cls(**json.loads(body))


@dataclass
class BatchMeta:
    """Who submitted a batch and how big it is."""

    batch_id: str
    subject: str
    total: int
    created: float = field(default_factory=time.time)


class ResultStore(Protocol):
    name: str

    async def create(self, meta: BatchMeta) -> None: ...
    async def meta(self, batch_id: str) -> BatchMeta | None: ...
    async def put(self, batch_id: str, index: int, result: dict[str, Any]) -> bool: ...
    async def has(self, batch_id: str, index: int) -> bool: ...
    async def results(self, batch_id: str) -> dict[int, dict[str, Any]]: ...


@dataclass
class MemoryResults:
    """Results in this process (no Redis): lost when the router restarts."""

    name: str = "memory"
    _meta: dict[str, BatchMeta] = field(default_factory=dict)
    _results: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)

    async def create(self, meta: BatchMeta) -> None:
        self._meta[meta.batch_id] = meta
        self._results[meta.batch_id] = {}

    async def meta(self, batch_id: str) -> BatchMeta | None:
        return self._meta.get(batch_id)

    async def put(self, batch_id: str, index: int, result: dict[str, Any]) -> bool:
        stored = self._results.setdefault(batch_id, {})
        if index in stored:
            return False
        stored[index] = result
        return True

    async def has(self, batch_id: str, index: int) -> bool:
        return index in self._results.get(batch_id, {})

    async def results(self, batch_id: str) -> dict[int, dict[str, Any]]:
        return dict(self._results.get(batch_id, {}))


class RedisResults:
    """Results in Redis hashes, kept for `ttl_s` after the batch was submitted."""

    name = "redis"

    def __init__(self, client: redis.Redis, ttl_s: int) -> None:
        self._client = client
        self._ttl = ttl_s

    async def create(self, meta: BatchMeta) -> None:
        key = f"{KEY_PREFIX}{meta.batch_id}:meta"
        await self._client.set(key, json.dumps(asdict(meta)), ex=self._ttl)

    async def meta(self, batch_id: str) -> BatchMeta | None:
        raw = await self._client.get(f"{KEY_PREFIX}{batch_id}:meta")
        return BatchMeta(**json.loads(raw)) if raw else None

    async def put(self, batch_id: str, index: int, result: dict[str, Any]) -> bool:
        key = f"{KEY_PREFIX}{batch_id}:results"
        stored = await self._client.hsetnx(key, str(index), json.dumps(result))
        await self._client.expire(key, self._ttl)
        return bool(stored)

    async def has(self, batch_id: str, index: int) -> bool:
        return bool(await self._client.hexists(f"{KEY_PREFIX}{batch_id}:results", str(index)))

    async def results(self, batch_id: str) -> dict[int, dict[str, Any]]:
        raw = await self._client.hgetall(f"{KEY_PREFIX}{batch_id}:results")
        return {int(k): json.loads(v) for k, v in raw.items()}


Handler = Callable[[BatchItem], Awaitable[None]]


class JobQueue(Protocol):
    name: str

    async def publish(self, items: list[BatchItem]) -> None: ...
    async def consume(self, handler: Handler) -> None: ...
    async def close(self) -> None: ...


class MemoryQueue:
    """An in-process queue (no RabbitMQ): items are lost when the router stops."""

    name = "memory"

    def __init__(self, prefetch: int) -> None:
        self._queue: asyncio.Queue[BatchItem] = asyncio.Queue()
        self._prefetch = prefetch

    async def publish(self, items: list[BatchItem]) -> None:
        for item in items:
            self._queue.put_nowait(item)

    async def consume(self, handler: Handler) -> None:
        async def worker() -> None:
            while True:
                item = await self._queue.get()
                try:
                    await handler(item)
                except Exception:
                    log.exception(
                        "batch_item_failed_requeued", batch=item.batch_id, index=item.index
                    )
                    await asyncio.sleep(1.0)
                    self._queue.put_nowait(item)

        await asyncio.gather(*(worker() for _ in range(self._prefetch)))

    async def close(self) -> None:
        return None


class RabbitQueue:
    """A durable RabbitMQ queue: persistent messages, publisher confirms, manual acks."""

    name = "rabbitmq"

    def __init__(
        self, connection: aio_pika.abc.AbstractRobustConnection, queue: str, prefetch: int
    ) -> None:
        self._connection = connection
        self._queue_name = queue
        self._prefetch = prefetch
        self._publish_channel: aio_pika.abc.AbstractChannel | None = None

    async def _channel(self) -> aio_pika.abc.AbstractChannel:
        if self._publish_channel is None or self._publish_channel.is_closed:
            self._publish_channel = await self._connection.channel(publisher_confirms=True)
            await self._publish_channel.declare_queue(self._queue_name, durable=True)
        return self._publish_channel

    async def publish(self, items: list[BatchItem]) -> None:
        channel = await self._channel()
        # Each publish awaits the broker's confirm: when SubmitBatch answers, every
        # item is on the queue (and on disk: persistent message, durable queue).
        await asyncio.gather(
            *(
                channel.default_exchange.publish(
                    aio_pika.Message(
                        item.encode(),
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        content_type="application/json",
                        message_id=f"{item.batch_id}:{item.index}",
                    ),
                    routing_key=self._queue_name,
                )
                for item in items
            )
        )

    async def consume(self, handler: Handler) -> None:
        channel = await self._connection.channel()
        await channel.set_qos(prefetch_count=self._prefetch)
        queue = await channel.declare_queue(self._queue_name, durable=True)
        slots = asyncio.Semaphore(self._prefetch)

        async def run(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            try:
                await handler(BatchItem.decode(message.body))
            except Exception:
                log.exception("batch_item_failed_requeued", message=message.message_id)
                await asyncio.sleep(1.0)
                await message.nack(requeue=True)
            else:
                await message.ack()  # only once the result is stored
            finally:
                slots.release()

        tasks: set[asyncio.Task[None]] = set()
        async with queue.iterator() as messages:
            async for message in messages:
                await slots.acquire()
                task = asyncio.create_task(run(message))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

    async def close(self) -> None:
        await self._connection.close()


async def open_queue(url: str, queue: str, prefetch: int) -> JobQueue:
    """RabbitMQ when it answers now, otherwise an in-process queue (logged)."""
    try:
        connection = await asyncio.wait_for(aio_pika.connect_robust(url), 3.0)
    except (OSError, TimeoutError, aio_pika.exceptions.AMQPError) as exc:
        log.warning(
            "rabbitmq_unreachable_batches_in_process", url=url, error=str(exc) or type(exc).__name__
        )
        return MemoryQueue(prefetch)
    log.info("batch_queue_rabbitmq", queue=queue)
    return RabbitQueue(connection, queue, prefetch)


async def open_results(url: str, ttl_s: int) -> tuple[ResultStore, redis.Redis | None]:
    """Redis when it answers now, otherwise an in-process store (logged)."""
    client, error = await connect_redis(url, socket_timeout=2.0)
    if client is None:
        log.warning("redis_unreachable_batch_results_in_process", error=error)
        return MemoryResults(), None
    return RedisResults(client, ttl_s), client


def new_batch_id() -> str:
    return "b_" + uuid.uuid4().hex


class BatchWorker:
    """Consumes the queue in the background and runs each item once."""

    def __init__(
        self,
        queue: JobQueue,
        results: ResultStore,
        run_item: Callable[[BatchItem], Awaitable[dict[str, Any]]],
    ) -> None:
        self._queue = queue
        self._results = results
        self._run_item = run_item
        self._task: asyncio.Task[None] | None = None

    async def handle(self, item: BatchItem) -> None:
        if await self._results.has(item.batch_id, item.index):
            return  # redelivered after its result was stored: nothing to do twice
        result = await self._run_item(item)
        if not await self._results.put(item.batch_id, item.index, result):
            log.info("batch_item_duplicate_ignored", batch=item.batch_id, index=item.index)

    def start(self) -> None:
        self._task = asyncio.create_task(self._queue.consume(self.handle), name="batch-worker")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        await self._queue.close()
