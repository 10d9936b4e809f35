"""The model registry: resolves specs to GGUF files and loads each model once."""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path

from headrace.services.inference.engine import LlamaEngine
from headrace.services.inference.settings import PACKAGED_MODELS, ModelSpec
from headrace.services.runtime.errors import NotFound
from headrace.services.runtime.logs import get_logger

log = get_logger(__name__)


def resolve_path(spec: ModelSpec, home: Path) -> Path:
    """The GGUF file of a spec, assembling a packaged model if needed."""
    if spec.path is not None:
        if not spec.path.is_file():
            raise FileNotFoundError(f"model {spec.name!r}: no GGUF file at {spec.path}")
        return spec.path
    assert spec.packaged is not None
    module_name, file_name = PACKAGED_MODELS[spec.packaged]
    target = home / "models" / file_name
    if not target.is_file():
        module = importlib.import_module(module_name)
        log.info("assembling_packaged_model", model=spec.name, target=str(target))
        module.assemble(target)
    return target


@dataclass
class ModelRegistry:
    """Loaded engines by name."""

    engines: dict[str, LlamaEngine]
    default: str
    home: Path = Path(".headrace")
    slots: int = 1
    queue_size: int = 0
    stream_buffer: int = 256
    _weights: dict[tuple[Path, int | None, str], LlamaEngine] = field(default_factory=dict)

    @classmethod
    def load(
        cls,
        specs: list[ModelSpec],
        default: str,
        home: Path,
        slots: int,
        queue_size: int,
        stream_buffer: int = 256,
    ) -> ModelRegistry:
        registry = cls({}, default, home, slots, queue_size, stream_buffer)
        for spec in specs:
            if spec.name in registry.engines:
                raise ValueError(f"model {spec.name!r} is declared twice")
            registry.engines[spec.name] = registry.build(spec)
        registry.default = default or specs[0].name
        if registry.default not in registry.engines:
            raise ValueError(f"default model {registry.default!r} is not in the registry")
        return registry

    def build(self, spec: ModelSpec) -> LlamaEngine:
        """An engine for a spec, sharing the weights of one already built on the same file."""
        path = resolve_path(spec, self.home)
        key = (path, spec.gpu_layers, spec.extra_buffer_types)
        shared = self._weights.get(key)
        engine = LlamaEngine(
            spec,
            path,
            self.slots,
            self.queue_size,
            model=shared.model if shared else None,
            stream_buffer=self.stream_buffer,
        )
        self._weights.setdefault(key, engine)
        return engine

    def get(self, name: str) -> LlamaEngine:
        """The engine for a name or one of its aliases ("" is the default)."""
        engine = self.engines.get(name or self.default)
        if engine is None:
            engine = next((e for e in self.engines.values() if name in e.spec.aliases), None)
        if engine is None:
            raise NotFound(f"unknown model {name!r}; available: {', '.join(sorted(self.engines))}")
        return engine

    def close(self) -> None:
        # Contexts first: engines that share weights free the model with the last one.
        for engine in self.engines.values():
            engine.close_context()
        for engine in self.engines.values():
            engine.close_model()
