"""A real OpenAI-compatible server as the hosted provider: llama-cpp-python's own
`llama_cpp.server`, started with Headrace's model parameters (AMX-safe), answers
through the upstream service's registry with a streamed answer, its tokens counted
here (it sends no usage in streams) and charged to the allowance."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from headrace.services.upstream.allowance import Allowances, MemoryAllowanceStore
from headrace.services.upstream.provider import OpenAIUpstream
from headrace.services.upstream.registry import Ask, HostedRegistry
from headrace.services.upstream.settings import Allowance, HostedModel
from tests.support.ports import free_port_block
from tests.support.suite import REPO

pytest.importorskip("llama_cpp.server", reason="needs llama-cpp-python[server]")


@pytest.fixture(scope="module")
def llama_server(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port_block(1)
    log = (tmp_path_factory.mktemp("llama-server") / "server.log").open("wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "headrace.services.runtime.llama_server",
            "--model",
            str(tiny_model),
            "--model_alias",
            "tiny-served",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "512",
            "--n_threads",
            "1",
            "--chat_format",
            "chatml",
        ],
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"llama_cpp.server exited: {log.name}")
        try:
            with urllib.request.urlopen(f"{base}/models", timeout=1):
                break
        except OSError:
            time.sleep(0.3)
    yield base
    process.terminate()
    process.wait(15)


async def test_llama_cpp_server_streams_a_real_answer_through_the_registry(
    llama_server: str,
) -> None:
    spec = HostedModel(name="llama-hosted", base_url=llama_server, model="tiny-served")
    allowances = Allowances(
        MemoryAllowanceStore(), {spec.name: Allowance(requests_per_day=10, tokens_per_day=10_000)}
    )
    registry = HostedRegistry([OpenAIUpstream(spec)], allowances)
    ask = Ask([{"role": "user", "content": "Hello"}], {"max_tokens": 8, "temperature": 0.0}, 8)
    try:
        deltas = [d async for d in registry.generate(registry.get("llama-hosted"), ask)]
    finally:
        await registry.close()
    texts = [d.text for d in deltas if d.text]
    last = deltas[-1]
    assert len(texts) >= 2  # streamed, not one block
    assert last.finish_reason in ("stop", "length")
    # llama_cpp.server sends no usage in a stream (stream_options is ignored): the
    # tokens are counted here, from the text, and charged to the allowance.
    assert not last.usage_from_provider
    assert last.completion_tokens > 0 and last.prompt_tokens > 0
    used = {u.window: u.used for u in await allowances.usage("llama-hosted")}
    assert used == {
        "requests_per_day": 1,
        "tokens_per_day": last.prompt_tokens + last.completion_tokens,
    }
