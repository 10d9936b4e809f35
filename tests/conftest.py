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
