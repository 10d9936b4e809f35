"""The running sanitizer's policies: reloaded when headrace.toml or a terms file
changes (a configuration that does not load keeps the running policies), and
served to watchers as versioned output policies with heartbeats in between."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from headrace.sanitizer.v1 import sanitizer_pb2
from headrace.services.runtime.errors import PermissionDenied
from headrace.services.runtime.output_filter.wire import OutputPolicies
from headrace.services.sanitizer.live import LivePolicies
from headrace.services.sanitizer.servicer import SanitizerServicer
from headrace.services.sanitizer.settings import SanitizerSettings


class _Context:
    """Stands in for grpc.aio.ServicerContext."""


def write_config(path: Path, body: str) -> None:
    path.write_text(body)
    # A second write within the file system's timestamp granularity must still show.
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "headrace.toml"
    write_config(path, '[sanitizer]\ndeny_terms = ["dog"]\n')
    monkeypatch.setenv("HEADRACE_CONFIG", str(path))
    monkeypatch.delenv("HEADRACE_DENY_TERMS", raising=False)
    return path


def live_from(config: Path) -> LivePolicies:
    settings = SanitizerSettings()

    def load():  # type: ignore[no-untyped-def]
        return SanitizerSettings().policies()

    return LivePolicies(settings.policies(), load, lambda: settings.policy_files())


async def test_a_changed_config_file_is_loaded_and_checks_use_it(config: Path) -> None:
    live = live_from(config)
    servicer = SanitizerServicer(live)
    before = live.current
    follow = asyncio.create_task(live.follow(0.02))
    try:
        write_config(config, '[sanitizer]\ndeny_terms = ["dog", "zebra"]\n')
        await asyncio.wait_for(before.replaced.wait(), 2)
        assert live.current.version != before.version
        with pytest.raises(PermissionDenied):
            await servicer.CheckPrompt(
                sanitizer_pb2.CheckPromptRequest(prompt="a zebra"),
                _Context(),  # type: ignore[arg-type]
            )
    finally:
        live.close()
        await follow


async def test_a_config_that_does_not_load_keeps_the_running_policies(config: Path) -> None:
    live = live_from(config)
    before = live.current
    write_config(config, "[sanitizer]\ndisabled_rules = ['no.such.rule']\n")
    assert live.changed_on_disk()
    assert not live.reload()
    assert live.current is before


async def test_the_watch_sends_the_policies_then_heartbeats_then_changes(config: Path) -> None:
    live = live_from(config)
    servicer = SanitizerServicer(live, heartbeat_s=0.05)
    stream = servicer.WatchOutputPolicy(
        sanitizer_pb2.WatchOutputPolicyRequest(),
        _Context(),  # type: ignore[arg-type]
    )
    first = await anext(stream)
    assert first.HasField("policies") and first.heartbeat_seconds == pytest.approx(0.05)
    rules = OutputPolicies.from_proto(first.version, first.policies).for_tier("")
    assert rules is not None and "deny.terms" in [r.id for r in rules.rules]

    heartbeat = await asyncio.wait_for(anext(stream), 1)
    assert heartbeat.version == first.version and not heartbeat.HasField("policies")

    write_config(config, '[sanitizer]\ndeny_terms = ["zebra"]\n')
    assert live.reload()
    changed = await asyncio.wait_for(anext(stream), 1)
    assert changed.version != first.version and changed.HasField("policies")

    live.close()  # the service stops: the stream ends instead of holding the drain
    async with asyncio.timeout(1):
        rest = [m async for m in stream]
    assert len(rest) <= 1


async def test_a_watcher_that_knows_the_version_gets_a_heartbeat_first(config: Path) -> None:
    live = live_from(config)
    servicer = SanitizerServicer(live, heartbeat_s=0.05)
    stream = servicer.WatchOutputPolicy(
        sanitizer_pb2.WatchOutputPolicyRequest(known_version=live.current.version),
        _Context(),  # type: ignore[arg-type]
    )
    first = await anext(stream)
    assert first.version == live.current.version and not first.HasField("policies")
    await stream.aclose()


async def test_the_service_stops_at_once_with_watch_streams_open(config: Path) -> None:
    # A watch never ends by itself: without the runtime's `stopping` hook the drain
    # would wait the whole grace for it.
    import grpc

    from headrace.sanitizer.v1 import sanitizer_pb2_grpc
    from headrace.services.runtime.server import Service, serve
    from tests.support.ports import free_port

    live = live_from(config)
    settings = SanitizerSettings(port=free_port(), metrics_port=free_port(), grace_seconds=5)

    async def register(server: grpc.aio.Server) -> list[str]:
        sanitizer_pb2_grpc.add_SanitizerServiceServicer_to_server(
            SanitizerServicer(live, heartbeat_s=0.2), server
        )
        return ["headrace.sanitizer.v1.SanitizerService"]

    stop = asyncio.Event()
    task = asyncio.create_task(
        serve(Service("sanitizer", settings, register, stopping=live.close), stop)
    )
    async with grpc.aio.insecure_channel(f"127.0.0.1:{settings.port}") as channel:
        call = sanitizer_pb2_grpc.SanitizerServiceStub(channel).WatchOutputPolicy(
            sanitizer_pb2.WatchOutputPolicyRequest(), wait_for_ready=True, timeout=10
        )
        first = await call.read()
        assert first.HasField("policies")
        started = asyncio.get_running_loop().time()
        stop.set()
        await asyncio.wait_for(task, 4)
        assert asyncio.get_running_loop().time() - started < 2.0, "the watch held the drain"
