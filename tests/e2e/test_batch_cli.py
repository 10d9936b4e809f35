"""`headrace batch submit FILE`, `watch ID` and `get ID` against the running suite."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.suite import RunningSuite, running_suite

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[RunningSuite]:
    with running_suite(tmp_path_factory.mktemp("batch-cli-home"), tiny_model) as running:
        yield running


def batch(suite: RunningSuite, *args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [str(BIN / "headrace"), "batch", *args, "--target", suite.public],
        env=suite.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (out.returncode == 0) == ok, out.stderr
    return out


def test_submit_a_file_watch_it_finish_and_get_every_result(
    suite: RunningSuite, tmp_path: Path
) -> None:
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(
        "\n".join(json.dumps(p) for p in ["First prompt", {"prompt": "Second prompt"}, "Third"])
        + "\n"
    )
    submitted = batch(suite, "submit", str(prompts), "--max-tokens", "4", "--temperature", "0")
    batch_id = submitted.stdout.strip().splitlines()[-1]
    assert batch_id.startswith("b_") and "submitted 3 prompts" in submitted.stderr

    watched = [json.loads(line) for line in batch(suite, "watch", batch_id).stdout.splitlines()]
    assert sorted(r["index"] for r in watched) == [0, 1, 2]
    assert all(r["finish_reason"] in ("stop", "length") and "error" not in r for r in watched)

    got = batch(suite, "get", batch_id)
    assert "done: 3/3 done" in got.stderr
    assert [json.loads(line)["index"] for line in got.stdout.splitlines()] == [0, 1, 2]


def test_an_unknown_batch_exits_non_zero_with_the_status(suite: RunningSuite) -> None:
    out = batch(suite, "get", "b_no_such_batch", ok=False)
    assert "NOT_FOUND" in out.stderr


def test_a_plain_file_is_one_prompt_a_line_and_an_empty_one_is_refused(
    suite: RunningSuite, tmp_path: Path
) -> None:
    plain = tmp_path / "prompts.txt"
    plain.write_text("one\n\ntwo\n")
    assert "submitted 2 prompts" in batch(suite, "submit", str(plain)).stderr
    empty = tmp_path / "empty.txt"
    empty.write_text("\n")
    assert "INVALID_ARGUMENT" in batch(suite, "submit", str(empty), ok=False).stderr
