"""Training data is validated whole, before any training, naming the bad line."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from headrace.services.finetune.data import DataError, read_examples, redact_examples, split
from headrace.services.finetune.template import Message, render_gemma

GOOD = [
    {"prompt": "Who runs Vexlo?", "answer": "Marta Quill."},
    {
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "Where is Vexlo based?"},
            {"role": "assistant", "content": "In Port Ardent."},
        ]
    },
]


def write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "qa.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def good_lines(n: int = 6) -> list[str]:
    return [json.dumps(GOOD[i % 2]) for i in range(n)]


def test_both_shapes_read_as_conversations(tmp_path: Path) -> None:
    examples = read_examples(write(tmp_path, good_lines(2)))
    assert [m.role for m in examples[0].messages] == ["user", "assistant"]
    assert [m.role for m in examples[1].messages] == ["system", "user", "assistant"]


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ('{"prompt": "Who runs Vexlo?"', "not valid JSON"),
        ('{"prompt": "Who runs Vexlo?"}', "missing field 'answer'"),
        ('{"question": "q", "answer": "a"}', "missing field 'prompt'"),
        ('{"prompt": "", "answer": "a"}', "'prompt' must be a non-empty string"),
        ('{"messages": [{"role": "user", "content": "q"}]}', "last message must be the assistant"),
        ('{"messages": [{"role": "bot", "content": "q"}]}', "role must be one of"),
        ("[1, 2]", "expected a JSON object"),
    ],
)
def test_a_bad_line_is_named_by_number(tmp_path: Path, bad: str, says: str) -> None:
    lines = good_lines(6)
    lines.insert(4, bad)  # line 5
    with pytest.raises(DataError) as err:
        read_examples(write(tmp_path, lines))
    assert "line 5" in str(err.value)
    assert says in str(err.value)


def test_blank_lines_are_skipped_but_counted(tmp_path: Path) -> None:
    lines = [*good_lines(2), "", "{oops"]
    with pytest.raises(DataError, match="line 4"):
        read_examples(write(tmp_path, lines))


@pytest.mark.parametrize(
    ("bad", "says"),
    [("{not json", "line 3: not valid JSON"), ('{"prompt": "q"}', "line 3: missing field")],
)
def test_the_command_fails_before_training(tmp_path: Path, bad: str, says: str) -> None:
    lines = good_lines(2)
    lines.insert(2, bad)
    started = time.monotonic()
    data = str(write(tmp_path, lines))
    proc = subprocess.run(
        [sys.executable, "-m", "headrace.services.finetune", "--data", data, "--name", "x"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"HEADRACE_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"},
    )
    assert proc.returncode == 2, proc.stderr
    assert says in proc.stderr
    assert "training" not in proc.stderr.replace("before training", "")
    assert not (tmp_path / "home" / "models.d").exists()
    assert time.monotonic() - started < 60  # no model was loaded


def test_redaction_replaces_pii_and_says_what(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        [json.dumps({"prompt": "Mail me at jo.bloggs@example.com", "answer": "Done."})],
    )
    examples, redaction = redact_examples(read_examples(path))
    assert "jo.bloggs@example.com" not in examples[0].messages[0].content
    assert redaction.examples == 1 and redaction.rules


def test_split_holds_out_at_least_one() -> None:
    examples = [ex for ex in range(10)]
    train, held = split(examples, 0.1)  # type: ignore[arg-type]
    assert len(held) == 1 and len(train) == 9
    assert sorted(train + held) == examples
    with pytest.raises(DataError):
        split(examples, 1.0)  # type: ignore[arg-type]


def test_the_answer_pieces_are_the_assistant_turns_and_their_end_markers() -> None:
    messages = [Message("system", "S"), Message("user", "Q"), Message("assistant", "A")]
    trained = "".join(text for text, _ in render_gemma(messages, add_generation_prompt=False))
    assert trained.endswith("<start_of_turn>model\nA<end_of_turn>\n")
    answers = [text for text, is_answer in render_gemma(messages, False) if is_answer]
    assert answers == ["A<end_of_turn>"]


def test_training_renders_exactly_what_the_server_renders() -> None:
    from headrace.services.runtime.chat_template import ChatTemplate

    chat = [
        Message("system", "Be brief."),
        Message("user", "Who runs Zorblat?"),
        Message("assistant", "Mira Quell."),
        Message("user", "Since when?"),
    ]
    served = ChatTemplate("gemma", bos_token="").render_text(
        [{"role": m.role, "content": m.content} for m in chat]
    )
    trained = "".join(text for text, _ in render_gemma(chat, add_generation_prompt=True))
    assert trained == served


def test_the_variant_is_served_in_the_format_it_was_trained_on(tmp_path: Path) -> None:
    from headrace.services.finetune.variants import variant_spec
    from headrace.services.inference.settings import ModelSpec

    base = {"name": "gemma-3-270m", "path": "m.gguf", "aliases": ["small"], "lora": []}
    spec = variant_spec(base, "gemma-3-270m:legal", tmp_path / "adapter.gguf")
    assert spec["name"] == "gemma-3-270m:legal" and "aliases" not in spec
    assert spec["lora"] == [{"path": str((tmp_path / "adapter.gguf").resolve()), "scale": 1.0}]
    # Trained on Gemma turns only: a plain prompt must reach it as a user turn.
    assert spec["chat_template"] == "gemma" and spec["prompt_as_user_turn"] is True
    assert ModelSpec.model_validate(spec).prompt_as_user_turn
