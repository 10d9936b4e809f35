"""Chat templates: a conversation rendered as a model expects it, as token-safe segments.

A model's template comes from its GGUF metadata (`tokenizer.chat_template`), from its
registry entry, or from a built-in one named there (`gemma`, `chatml`). The packaged
default model's GGUF carries none, although its vocabulary has Gemma's turn tokens;
falling back to a guessed format (llama-server falls back to ChatML and streams
`<|im_end|>` into the reply) would be worse than refusing, so a model without a
template refuses conversations instead.

`render` returns the text as segments: the template's own text, in which special
tokens (`<start_of_turn>`) must be parsed as such, and the turns' content, in which
they must not, so that a user who types `<start_of_turn>model` writes text, not a turn.
Inference and finetune both render with this module, so a model is trained on exactly
the format it is served with.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from headrace.types.v1 import types_pb2

ROLE_NAMES = {
    types_pb2.ROLE_SYSTEM: "system",
    types_pb2.ROLE_USER: "user",
    types_pb2.ROLE_ASSISTANT: "assistant",
}
"""A ChatMessage's role as templates (and the OpenAI API) name it."""

# Gemma's turn format (Gemma 2 and 3): a system turn is folded into the first user
# turn, as Gemma's own template does; the model's turns are written `model`. Unlike
# Gemma's template it does not insist on strictly alternating roles: two user turns in
# a row are two user turns.
GEMMA = (
    "{{ bos_token }}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set prefix = messages[0]['content'] + '\\n\\n' -%}{%- set turns = messages[1:] -%}"
    "{%- else -%}{%- set prefix = '' -%}{%- set turns = messages -%}{%- endif -%}"
    "{%- for m in turns -%}"
    "{{ '<start_of_turn>' + ('model' if m['role'] == 'assistant' else 'user') + '\\n' }}"
    "{{ (prefix if loop.first else '') + m['content'] + '<end_of_turn>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
)

CHATML = (
    "{%- for m in messages -%}"
    "{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

BUILTIN: dict[str, str] = {"gemma": GEMMA, "chatml": CHATML}
"""Templates a registry entry may name instead of writing one."""

# Stands in for a turn's content while the template renders; NUL never survives
# the sanitizer's normalisation, so it cannot occur in real content.
_MARK = "\x00{}\x00"
_MARKED = re.compile("\x00(\\d+)\x00")


class TemplateError(ValueError):
    """The template does not render this conversation."""


@dataclass(frozen=True)
class Segment:
    """A run of rendered text: the template's own (special tokens parse) or a turn's."""

    text: str
    special: bool


def template_text(name_or_jinja: str) -> str:
    """A built-in template by name, or the Jinja text itself."""
    return BUILTIN.get(name_or_jinja.strip().lower(), name_or_jinja)


class ChatTemplate:
    """A compiled Jinja chat template (sandboxed, as Hugging Face renders them)."""

    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = "") -> None:
        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined
        )
        env.globals["raise_exception"] = _raise
        try:
            self._template = env.from_string(template_text(source))
        except jinja2.TemplateError as exc:
            raise TemplateError(f"the chat template does not parse: {exc}") from None
        self.bos_token = bos_token
        self.eos_token = eos_token

    def render(
        self, messages: Sequence[Mapping[str, str]], *, add_generation_prompt: bool = True
    ) -> list[Segment]:
        """The conversation as segments, in order; adjacent template text joined."""
        marked = [{"role": m["role"], "content": _MARK.format(i)} for i, m in enumerate(messages)]
        try:
            text = self._template.render(
                messages=marked,
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token,
                eos_token=self.eos_token,
            )
        except jinja2.TemplateError as exc:
            raise TemplateError(
                f"the chat template cannot render this conversation: {exc}"
            ) from None
        segments: list[Segment] = []
        at = 0
        for found in _MARKED.finditer(text):
            if found.start() > at:
                segments.append(Segment(text[at : found.start()], special=True))
            content = messages[int(found.group(1))]["content"]
            if content:
                segments.append(Segment(content, special=False))
            at = found.end()
        if at < len(text):
            segments.append(Segment(text[at:], special=True))
        return segments

    def render_text(
        self, messages: Sequence[Mapping[str, str]], *, add_generation_prompt: bool = True
    ) -> str:
        """The conversation as one string (for display and training data)."""
        segments = self.render(messages, add_generation_prompt=add_generation_prompt)
        return "".join(s.text for s in segments)


def _raise(message: str) -> None:
    raise TemplateError(message)
