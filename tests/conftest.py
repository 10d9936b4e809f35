"""Fixtures shared by every test directory."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny llama-architecture GGUF written with the gguf package (loads in ms).

    HEADRACE_TEST_MODEL=/path/to.gguf runs the same tests on a real model instead.
    """
    override = os.environ.get("HEADRACE_TEST_MODEL")
    if override:
        return Path(override)
    from tests.support.tiny_model import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("models") / "tiny.gguf")


@pytest.fixture(scope="session")
def default_model() -> Path:
    """The GGUF of the model users run by default (Gemma 3 270M Q4_K_M), assembled from
    its PyPI package under the repository's .headrace/models as `make up` does."""
    from headrace.services.inference.registry import resolve_path
    from headrace.services.inference.settings import DEFAULT_MODEL

    return resolve_path(DEFAULT_MODEL, Path(__file__).resolve().parents[1] / ".headrace")
