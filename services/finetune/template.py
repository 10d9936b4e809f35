"""The chat template training renders with: Gemma's turn format, the one the default
model is served with. A training example must look exactly like a served prompt, or
the adapter learns a format the server never sends.

It renders the same text as the server's built-in `gemma` template
(services/runtime/chat_template.py; a test holds them equal) and also marks which
pieces are the answer, which the loss is computed on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

START, END = "<start_of_turn>", "<end_of_turn>"


@dataclass(frozen=True)
class Message:
    role: str  # system | user | assistant
    content: str


def render_gemma(
    messages: Sequence[Message], add_generation_prompt: bool
) -> list[tuple[str, bool]]:
    """The conversation as text pieces, each marked True when it is an answer the model
    must learn to write (an assistant turn's content and its end-of-turn marker).

    The BOS token is not in the text: the tokenizer adds it. System content goes in
    front of the next user turn, as Gemma has no system role.
    """
    pieces: list[tuple[str, bool]] = []
    system = ""
    for message in messages:
        if message.role == "system":
            system = message.content + "\n\n"
            continue
        if message.role == "user":
            pieces.append((f"{START}user\n{system}{message.content}{END}\n", False))
            system = ""
        else:
            pieces.append((f"{START}model\n", False))
            pieces.append((f"{message.content}{END}", True))
            pieces.append(("\n", False))
    if add_generation_prompt:
        pieces.append((f"{START}model\n", False))
    return pieces
