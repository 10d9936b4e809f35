"""The router's in-process output filter follows the sanitizer's published policy:
a change reaches a running router within a second, a router cut off from the watch
refuses (UNAVAILABLE) once the set time has passed and not before, and a policy it
cannot rebuild exactly is refused rather than applied in part.

Real gRPC on loopback: the sanitizer's servicer in a grpc.aio server, the router's
OutputPolicyWatch on a channel to it (in the suite, Envoy sits between them).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest

from headrace.sanitizer.v1 import sanitizer_pb2, sanitizer_pb2_grpc
from headrace.services.router.backends import LocalFilter, NoFilter, OutputPolicyWatch
from headrace.services.runtime.errors import Unavailable
from headrace.services.sanitizer.live import LivePolicies
from headrace.services.sanitizer.policy import PromptPolicy, TierPolicies
from headrace.services.sanitizer.servicer import SanitizerServicer

HEARTBEAT = 0.1


def policies(*deny: str) -> TierPolicies:
    base = PromptPolicy(max_bytes=4096, max_tokens_estimate=4096, deny_terms=list(deny))
    free = PromptPolicy(max_bytes=4096, max_tokens_estimate=4096, redact=False)
    return TierPolicies(base, {"free": free})


@dataclass
class Sanitizer:
    live: LivePolicies
    server: grpc.aio.Server
    target: str


@pytest.fixture
async def sanitizer() -> AsyncIterator[Sanitizer]:
    live = LivePolicies(policies("dog"))
    server = grpc.aio.server()
    sanitizer_pb2_grpc.add_SanitizerServiceServicer_to_server(
        SanitizerServicer(live, HEARTBEAT), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield Sanitizer(live, server, f"127.0.0.1:{port}")
    live.close()
    await server.stop(0)


@pytest.fixture
async def channel(sanitizer: Sanitizer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(sanitizer.target) as channel:
        yield channel


def filtered(rules: object, text: str) -> tuple[str, bool]:
    out = rules.filter().feed(text, end=True)  # type: ignore[attr-defined]
    return out.text, out.blocked


async def test_the_router_filters_under_the_published_policy(
    channel: grpc.aio.Channel,
) -> None:
    watch = OutputPolicyWatch(sanitizer_pb2_grpc.SanitizerServiceStub(channel), stale_s=2)
    watch.start()
    try:
        rules = await watch.rules_for("", 5)  # waits for the first policy
        assert isinstance(rules.filter(), LocalFilter)
        assert filtered(rules, "a hot dog") == ("", True)
        assert filtered(rules, "mail bob@example.com") == ("mail [EMAIL]", False)
        free = await watch.rules_for("free", 5)  # no redaction, no deny terms there
        assert isinstance(free.filter(), NoFilter)
    finally:
        await watch.close()


async def test_a_policy_change_reaches_a_running_router_within_a_second(
    sanitizer: Sanitizer, channel: grpc.aio.Channel
) -> None:
    watch = OutputPolicyWatch(sanitizer_pb2_grpc.SanitizerServiceStub(channel), stale_s=2)
    watch.start()
    try:
        before = (await watch.rules_for("", 5)).version
        changed_at = time.monotonic()
        sanitizer.live.replace(policies("dog", "zebra"))
        while (rules := await watch.rules_for("", 5)).version == before:
            assert time.monotonic() - changed_at < 1.0, "the change took over a second"
            await asyncio.sleep(0.005)
        assert rules.version == sanitizer.live.current.version
        assert filtered(rules, "one zebra") == ("", True)
    finally:
        await watch.close()


async def test_a_router_cut_off_from_the_watch_refuses_after_the_set_time(
    sanitizer: Sanitizer, channel: grpc.aio.Channel
) -> None:
    stale = 0.6
    watch = OutputPolicyWatch(sanitizer_pb2_grpc.SanitizerServiceStub(channel), stale_s=stale)
    watch.start()
    try:
        await watch.rules_for("", 5)
        await sanitizer.server.stop(0)  # the watch is lost, and reconnecting fails
        cut = time.monotonic()
        # Within the set time the policy held is still used...
        await watch.rules_for("", 5)
        await asyncio.sleep(stale / 2)
        await watch.rules_for("", 5)
        # ...after it, requests are refused.
        await asyncio.sleep(stale - (time.monotonic() - cut) + 0.05)
        with pytest.raises(Unavailable, match="not known to be current"):
            await watch.rules_for("", 5)
    finally:
        await watch.close()


async def test_a_silent_sanitizer_is_a_lost_watch() -> None:
    # Nothing answers on the stream (no heartbeat): the watch counts as lost.
    watch = OutputPolicyWatch(None, stale_s=0.3)  # type: ignore[arg-type]
    reply = sanitizer_pb2.WatchOutputPolicyResponse(version="v1")
    reply.policies.default_policy.SetInParent()
    watch.apply(reply)
    assert (await watch.rules_for("", 1)).rules is None
    await asyncio.sleep(0.35)
    with pytest.raises(Unavailable):
        await watch.rules_for("", 1)
    watch.apply(sanitizer_pb2.WatchOutputPolicyResponse(version="v1"))  # a heartbeat
    await watch.rules_for("", 1)


async def test_a_policy_the_router_cannot_rebuild_is_refused() -> None:
    watch = OutputPolicyWatch(None, stale_s=5)  # type: ignore[arg-type]
    good = sanitizer_pb2.WatchOutputPolicyResponse(version="v1")
    good.policies.default_policy.SetInParent()
    watch.apply(good)
    await watch.rules_for("", 1)
    bad = sanitizer_pb2.WatchOutputPolicyResponse(version="v2")
    rule = bad.policies.default_policy.rules.add(id="x", action=1)
    rule.pattern.regex, rule.pattern.partial, rule.pattern.max_length = "a", "a\\Z", 1
    rule.pattern.finder = "unknown"
    watch.apply(bad)
    with pytest.raises(Unavailable):
        await watch.rules_for("", 1)
    # Heartbeats of the refused version do not bring the old rules back.
    watch.apply(sanitizer_pb2.WatchOutputPolicyResponse(version="v2"))
    with pytest.raises(Unavailable):
        await watch.rules_for("", 1)


async def test_before_any_policy_a_request_waits_then_is_refused() -> None:
    watch = OutputPolicyWatch(None, stale_s=0.2)  # type: ignore[arg-type]
    started = time.monotonic()
    with pytest.raises(Unavailable):
        await watch.rules_for("", 5)
    assert 0.15 < time.monotonic() - started < 1.0
