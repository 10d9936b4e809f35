"""<home>/models.d: a model spec dropped there while the replica runs is served, sharing
its base's weights; a bad file is skipped, not fatal."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from headrace.services.inference.engine import Sampling
from headrace.services.inference.models_dir import ModelsDir, watch
from headrace.services.inference.registry import ModelRegistry
from headrace.services.inference.settings import ModelSpec
from tests.support.tiny_model import write_tiny_lora


async def test_a_new_file_becomes_a_served_model(tiny_model: Path, tmp_path: Path) -> None:
    registry = ModelRegistry.load(
        [ModelSpec(name="base", path=tiny_model, context_size=256)], "", tmp_path, 1, 2
    )
    folder = ModelsDir(tmp_path / "models.d")
    task = asyncio.create_task(watch(folder, registry, 0.05, 30.0))
    try:
        lora = write_tiny_lora(tmp_path / "adapter.gguf")
        (tmp_path / "models.d").mkdir()
        (tmp_path / "models.d" / "bad.json").write_text("{not json")
        gone = {"name": "gone", "path": str(tiny_model), "lora": [{"path": "/no/such.gguf"}]}
        (tmp_path / "models.d" / "gone.json").write_text(json.dumps(gone))
        spec = {"name": "base:tuned", "path": str(tiny_model), "context_size": 256}
        spec["lora"] = [{"path": str(lora)}]
        (tmp_path / "models.d" / "base--tuned.json").write_text(json.dumps(spec))
        for _ in range(200):
            if "base:tuned" in registry.engines:
                break
            await asyncio.sleep(0.05)
        engine = registry.get("base:tuned")
        assert engine.model is registry.get("base").model  # the weights are shared
        deltas = [d async for d in engine.generate("hello", Sampling(max_tokens=3))]
        assert deltas[-1].finish_reason is not None
        assert not task.done()  # the bad files did not end the watch
        assert "gone" not in registry.engines
    finally:
        task.cancel()
        registry.close()
