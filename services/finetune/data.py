"""Training data: JSONL read and validated whole before any training starts.

Each line is one example, in either of two shapes:

    {"messages": [{"role": "system"|"user"|"assistant", "content": "..."}, ...]}
    {"prompt": "...", "answer": "..."}

A chat example needs at least one user turn and ends with an assistant turn (the
answer the model learns). Blank lines are skipped. The first bad line stops the
run with a DataError naming its line number and what is wrong with it.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path

from headrace.services.finetune.template import Message

ROLES = ("system", "user", "assistant")


class DataError(ValueError):
    """The training data is not usable; the message names the file and line."""


@dataclass(frozen=True)
class Example:
    line: int
    messages: tuple[Message, ...]


def _message(raw: object, where: str) -> Message:
    if not isinstance(raw, dict):
        raise DataError(f"{where}: a message must be an object with role and content")
    role, content = raw.get("role"), raw.get("content")
    if role not in ROLES:
        raise DataError(f"{where}: role must be one of {', '.join(ROLES)}, not {role!r}")
    if not isinstance(content, str) or not content.strip():
        raise DataError(f"{where}: content must be a non-empty string")
    return Message(role, content)


def parse_line(text: str, where: str) -> tuple[Message, ...]:
    """One JSONL line as a conversation, or DataError saying what is wrong with it."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(obj, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(obj).__name__}")
    if "messages" in obj:
        raw = obj["messages"]
        if not isinstance(raw, list) or not raw:
            raise DataError(f"{where}: messages must be a non-empty list")
        messages = tuple(_message(m, f"{where}, message {i + 1}") for i, m in enumerate(raw))
        if not any(m.role == "user" for m in messages):
            raise DataError(f"{where}: a conversation needs at least one user message")
        if messages[-1].role != "assistant":
            raise DataError(f"{where}: the last message must be the assistant's answer")
        return messages
    missing = [key for key in ("prompt", "answer") if key not in obj]
    if missing:
        raise DataError(
            f"{where}: missing field {' and '.join(repr(k) for k in missing)} "
            "(each line needs prompt and answer, or messages)"
        )
    prompt, answer = obj["prompt"], obj["answer"]
    for key, value in (("prompt", prompt), ("answer", answer)):
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"{where}: {key!r} must be a non-empty string")
    return (Message("user", prompt), Message("assistant", answer))


def read_examples(path: Path) -> list[Example]:
    """Every example of a JSONL file, validated; DataError on the first bad line."""
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    examples = []
    with path.open(encoding="utf-8") as fh:
        for number, text in enumerate(fh, start=1):
            if text.strip():
                examples.append(Example(number, parse_line(text, f"{path}, line {number}")))
    if not examples:
        raise DataError(f"{path}: no examples")
    return examples


def data_hash(path: Path) -> str:
    """SHA-256 of the file as given (the report names exactly which data trained it)."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass(frozen=True)
class Redaction:
    """What redaction changed: examples touched and the rules that fired."""

    examples: int
    rules: tuple[str, ...]


def redact_examples(examples: Iterable[Example]) -> tuple[list[Example], Redaction]:
    """Examples with secrets and PII replaced by the sanitizer's placeholders, so an
    adapter cannot learn (and later repeat) them."""
    # The sanitizer's redaction rules (the shared runtime library) run in process, offline.
    from headrace.services.runtime.output_filter.redaction import redact

    out, touched, rules = [], 0, set[str]()
    for example in examples:
        messages = []
        changed = False
        for message in example.messages:
            text, fired = redact(message.content)
            changed |= bool(fired)
            rules.update(fired)
            messages.append(replace(message, content=text))
        touched += changed
        out.append(Example(example.line, tuple(messages)))
    return out, Redaction(touched, tuple(sorted(rules)))


def split(
    examples: list[Example], eval_fraction: float, seed: int = 0
) -> tuple[list[Example], list[Example]]:
    """Train and held-out examples: a seeded shuffle, at least one of each when possible."""
    if not 0 <= eval_fraction < 1:
        raise DataError(f"--eval-split must be in [0, 1), not {eval_fraction}")
    shuffled = examples[:]
    random.Random(seed).shuffle(shuffled)
    n_eval = round(len(shuffled) * eval_fraction)
    if eval_fraction > 0 and len(shuffled) >= 2:
        n_eval = min(max(n_eval, 1), len(shuffled) - 1)
    return shuffled[n_eval:], shuffled[:n_eval]
