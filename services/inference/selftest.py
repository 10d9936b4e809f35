"""`python -m headrace.services.inference.selftest [GGUF]`: load a model the way the
inference service does (same model parameters, extra buffer types chosen for this CPU),
warm it up and decode a short greedy answer, then print one JSON line.

`headrace doctor` and the tests run it in a child process, so a crash inside llama.cpp
(the AMX segfault) is reported as an exit by signal instead of taking the caller down.
Without an argument it decodes the packaged default model under HEADRACE_HOME.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from headrace.services.inference.engine import LlamaEngine, Sampling
from headrace.services.inference.registry import resolve_path
from headrace.services.inference.settings import DEFAULT_MODEL, InferenceSettings, ModelSpec
from headrace.services.inference.warmup import warm_up

PROMPT = "The capital of France is"
MAX_TOKENS = 16


async def _decode(engine: LlamaEngine) -> dict[str, object]:
    started = time.perf_counter()
    first = 0.0
    text = ""
    tokens = 0
    async for delta in engine.generate(PROMPT, Sampling(max_tokens=MAX_TOKENS, temperature=0.0)):
        if delta.text and not first:
            first = time.perf_counter()
        text += delta.text
        tokens = delta.completion_tokens or tokens
    elapsed = time.perf_counter() - started
    return {
        "text": text,
        "completion_tokens": tokens,
        "first_token_ms": round((first - started) * 1000, 1) if first else None,
        "tokens_per_second": round(tokens / elapsed, 1) if elapsed else None,
    }


async def selftest(spec: ModelSpec, path: Path) -> dict[str, object]:
    """Load, warm up and decode once; the facts as a dict."""
    engine = LlamaEngine(spec, path, slots=2, queue_size=2)
    try:
        await warm_up({spec.name: engine}, timeout_s=120)
        result = await _decode(engine)
    finally:
        engine.close()
    return {
        "model": spec.name,
        "path": str(path),
        "extra_buffer_types": engine.extra_bufts.enabled,
        "extra_buffer_types_reason": engine.extra_bufts.reason,
        **result,
    }


def main() -> None:
    settings = InferenceSettings()
    if len(sys.argv) > 1:
        path = Path(sys.argv[1])
        spec = ModelSpec(name=path.stem, path=path)
    else:
        spec = DEFAULT_MODEL
        path = resolve_path(spec, settings.home)
    extra = sys.argv[2] if len(sys.argv) > 2 else "auto"
    spec = spec.model_copy(update={"extra_buffer_types": extra})
    print(json.dumps(asyncio.run(selftest(spec, path))), flush=True)


if __name__ == "__main__":
    main()
