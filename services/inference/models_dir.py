"""`<home>/models.d/*.json`: models added while the replica runs (`headrace finetune`
writes its LoRA variants there).

Each file is one model spec, the fields of an `[[inference.models]]` table as JSON.
The replica loads them at start and polls the folder: a new file becomes a served
model within `models_dir_poll_seconds`, sharing the weights of a model with the same
GGUF (a LoRA variant costs its adapter and KV cache), and warmed up before any
request sees it. Only additions apply live; a changed or removed file is logged and
takes effect at the next start (an engine may be mid-stream).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from pydantic import ValidationError

from headrace.services.inference.registry import ModelRegistry
from headrace.services.inference.settings import ModelSpec
from headrace.services.inference.warmup import warm_up
from headrace.services.runtime.logs import get_logger

log = get_logger(__name__)


class ModelsDir:
    """The specs in the folder, read once per file version (name and mtime)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: dict[Path, float] = {}

    def read_new(self) -> list[ModelSpec]:
        """Specs of files added or changed since the last call; bad files are logged."""
        specs = []
        files = sorted(self.path.glob("*.json")) if self.path.is_dir() else []
        for file in files:
            try:
                mtime = file.stat().st_mtime
            except FileNotFoundError:
                continue
            if self._seen.get(file) == mtime:
                continue
            self._seen[file] = mtime
            try:
                spec = ModelSpec.model_validate(json.loads(file.read_text("utf-8")))
            except (OSError, ValueError, ValidationError) as exc:
                log.warning("models_dir_file_skipped", file=str(file), error=str(exc))
                continue
            missing = [str(lora.path) for lora in spec.lora if not lora.path.is_file()]
            if missing:
                # A deleted adapter must not stop the replica (and the suite) starting.
                log.warning("models_dir_file_skipped", file=str(file), missing=missing)
                continue
            specs.append(spec)
        return specs


async def watch(
    models: ModelsDir, registry: ModelRegistry, interval: float, warmup_timeout: float
) -> None:
    """Poll the folder and serve each new model once it has warmed up."""
    while True:
        await asyncio.sleep(interval)
        for spec in models.read_new():
            if spec.name in registry.engines:
                log.warning("models_dir_change_needs_restart", model=spec.name)
                continue
            try:
                engine = await asyncio.to_thread(registry.build, spec)
            except Exception as exc:
                log.error("models_dir_load_failed", model=spec.name, error=str(exc))
                continue
            try:
                await warm_up({spec.name: engine}, warmup_timeout)
            except Exception as exc:
                log.error("models_dir_load_failed", model=spec.name, error=str(exc))
                await asyncio.to_thread(engine.close)
                continue
            registry.engines[spec.name] = engine
            log.info("models_dir_model_added", model=spec.name)
