"""The router stays readable (issue 16): the function that runs one request fits on a
screen and no function in services/router/ grows past 60 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import headrace.services.router as router_package

ROUTER = Path(router_package.__file__).parent


def function_lengths() -> dict[str, int]:
    lengths = {}
    for source in sorted(ROUTER.glob("*.py")):
        tree = ast.parse(source.read_text(), filename=str(source))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                assert node.end_lineno is not None
                lengths[f"{source.name}:{node.name}"] = node.end_lineno - node.lineno + 1
    return lengths


def test_no_router_function_is_over_60_lines() -> None:
    lengths = function_lengths()
    assert "orchestrator.py:generate" in lengths, "the request's entry point moved: update me"
    too_long = {name: n for name, n in lengths.items() if n > 60}
    assert not too_long, f"split these into named stages: {too_long}"


def test_the_function_that_runs_one_request_is_at_most_40_lines() -> None:
    assert function_lengths()["orchestrator.py:generate"] <= 40
