"""`python -m headrace.services.router`: run the router (the public API)."""

from __future__ import annotations

import grpc

from headrace.router.v1 import router_pb2, router_pb2_grpc
from headrace.services.router.audit import AuditLog
from headrace.services.router.backends import AuthClient, Backends, OutputPolicyWatch
from headrace.services.router.batch_jobs import BatchJobs
from headrace.services.router.batch_queue import BatchWorker, open_queue, open_results
from headrace.services.router.orchestrator import Orchestrator
from headrace.services.router.servicer import RouterServicer
from headrace.services.router.settings import RouterSettings
from headrace.services.runtime.channels import internal_channel
from headrace.services.runtime.server import Service, run


def make_service() -> Service:
    settings = RouterSettings()
    audit = AuditLog(
        settings.home / "audit", settings.audit_queue_size, "audit", settings.audit_retention_days
    )
    feedback = AuditLog(
        settings.home / "feedback",
        settings.audit_queue_size,
        "feedback",
        settings.audit_retention_days,
    )
    channel = internal_channel(
        settings.internal_target, settings.cert_paths if settings.tls else None
    )

    workers: list[BatchWorker] = []
    redis_clients: list[object] = []
    # Closed in this order: settlements still waiting sent, then the policy watch.
    closing: list[AuthClient | OutputPolicyWatch] = []

    async def register(server: grpc.aio.Server) -> list[str]:
        audit.start()
        feedback.start()
        backends = Backends.over(
            channel,
            settings.upstream_timeout_seconds,
            settings.cache_store_interval_ms / 1000,
            settings.output_policy_stale_seconds,
            settings.usage_settle_delay_ms / 1000,
        )
        backends.sanitizer.policy.start()
        closing.extend([backends.auth, backends.sanitizer.policy])
        orchestrator = Orchestrator(backends, settings, audit, feedback)
        queue = await open_queue(
            settings.rabbitmq_url, settings.batch_queue, settings.batch_prefetch
        )
        results, client = await open_results(settings.redis_url, settings.batch_ttl_seconds)
        redis_clients.append(client)
        batches = BatchJobs(orchestrator, queue, results, settings)
        worker = BatchWorker(queue, results, batches.run_item)
        worker.start()
        workers.append(worker)
        router_pb2_grpc.add_RouterServiceServicer_to_server(
            RouterServicer(orchestrator, batches), server
        )
        return [router_pb2.DESCRIPTOR.services_by_name["RouterService"].full_name]

    async def close() -> None:
        for worker in workers:
            await worker.close()
        for client in redis_clients:
            if client is not None:
                await client.aclose()  # type: ignore[attr-defined]
        for backend in closing:
            await backend.close()
        await audit.close()
        await feedback.close()
        await channel.close()

    return Service("router", settings, register, close=close)


if __name__ == "__main__":
    run(make_service, "router")
