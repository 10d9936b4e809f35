"""Where a trained adapter goes so the running suite serves it, and A/B-tests it.

A variant is one JSON file in `<home>/models.d/`: a model spec (the same fields as an
`[[inference.models]]` table) that is the base model's spec with the adapter added.
A running inference replica watches that folder and loads new variants without a
restart, sharing the base model's weights in memory. An experiment is one JSON file
in `<home>/experiments.d/` (the fields of a `[router.experiments.NAME]` table), which
a running router reads the same way.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")

MODELS_DIR = "models.d"
EXPERIMENTS_DIR = "experiments.d"


def file_stem(name: str) -> str:
    """A file name for a model or experiment name (`gemma-3-270m:legal` → `gemma-3-270m--legal`)."""
    return _SAFE.sub("--", name).strip("-") or "unnamed"


def _write_json(path: Path, body: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)  # a watcher reads whole files only (it skips *.tmp)


def variant_spec(base: dict[str, Any], name: str, adapter: Path) -> dict[str, Any]:
    """The base model's spec as the variant: its name, the adapter, no aliases (they
    belong to the base), and the chat template the adapter was trained with. The
    adapter has only ever seen conversations, so a plain prompt reaches it as one user
    turn of that template (a raw prompt would be a format it was never trained on)."""
    spec = {k: v for k, v in base.items() if k not in ("aliases", "lora")}
    spec["name"] = name
    spec["lora"] = [{"path": str(adapter.resolve()), "scale": 1.0}]
    if not spec.get("chat_template"):
        spec["chat_template"] = "gemma"  # the built-in the training renders with
    spec["prompt_as_user_turn"] = True
    return spec


def write_variant(home: Path, spec: dict[str, Any]) -> Path:
    path = home / MODELS_DIR / f"{file_stem(spec['name'])}.json"
    _write_json(path, spec)
    return path


def write_experiment(home: Path, name: str, base: str, variant: str) -> Path:
    """An even A/B split of base vs variant over all tasks."""
    body = {
        "description": f"{variant} (LoRA from `headrace finetune`) against {base}",
        "tasks": [],
        "arms": [
            {"name": "base", "weight": 1.0, "model": base},
            {"name": "adapter", "weight": 1.0, "model": variant},
        ],
    }
    path = home / EXPERIMENTS_DIR / f"{file_stem(name)}.json"
    _write_json(path, body)
    return path
