"""What a request asks a model: a prompt or a conversation, and an output format.

The rest of the router treats content as one thing: the sanitizer checks it, the
cache keys it by an opaque digest of its canonical form, task rules read its routing
text, the audit line summarises it. A new kind of content changes this module only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from google.protobuf import json_format

from headrace.services.runtime.chat_template import ROLE_NAMES
from headrace.services.runtime.errors import InvalidArgument
from headrace.types.v1 import types_pb2


@dataclass(frozen=True)
class Turn:
    """One turn of a conversation."""

    role: int
    """A types.v1.Role value (system, user or assistant)."""
    content: str

    @property
    def role_name(self) -> str:
        return ROLE_NAMES.get(self.role, "unknown")


@dataclass(frozen=True)
class Content:
    """A prompt, or a conversation (`turns`), plus the output constraint."""

    prompt: str = ""
    turns: tuple[Turn, ...] = ()
    response_format: types_pb2.ResponseFormat = field(
        default_factory=types_pb2.ResponseFormat, compare=False
    )

    @property
    def is_conversation(self) -> bool:
        return bool(self.turns)

    @property
    def size_bytes(self) -> int:
        """UTF-8 bytes of all the text a model reads (auth estimates tokens from it)."""
        if self.turns:
            return sum(len(turn.content.encode()) for turn in self.turns)
        return len(self.prompt.encode())

    @property
    def routing_text(self) -> str:
        """The text task rules match: the prompt, or the last user turn."""
        return self.last_user_text

    @property
    def last_user_text(self) -> str:
        """The prompt, or the last user turn's text."""
        for turn in reversed(self.turns):
            if turn.role == types_pb2.ROLE_USER:
                return turn.content
        return self.prompt

    @property
    def constrained(self) -> bool:
        """Whether a JSON schema, JSON object or grammar constrains the output."""
        return self.response_format.WhichOneof("format") is not None

    def canonical(self) -> dict[str, object]:
        """A JSON-able form in which equal requests are equal."""
        form: dict[str, object] = (
            {"messages": [[turn.role_name, turn.content] for turn in self.turns]}
            if self.turns
            else {"prompt": self.prompt}
        )
        if self.constrained:
            form["response_format"] = json_format.MessageToDict(
                self.response_format, preserving_proto_field_name=True
            )
        return form

    def digest(self) -> str:
        """The SHA-256 of the canonical form: the cache's opaque content key."""
        text = json.dumps(
            self.canonical(), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        )
        return hashlib.sha256(text.encode()).hexdigest()

    def with_text(self, prompt: str, turns: Sequence[Turn]) -> Content:
        """The same request with its text replaced (the sanitizer's redacted copy)."""
        return replace(self, prompt=prompt, turns=tuple(turns))


def content_of(
    prompt: str,
    messages: Sequence[types_pb2.ChatMessage],
    response_format: types_pb2.ResponseFormat | None,
) -> Content:
    """A request's content as it came (`validate` says what is wrong with it)."""
    fmt = types_pb2.ResponseFormat()
    if response_format is not None:
        fmt.CopyFrom(response_format)
    turns = tuple(Turn(message.role, message.content) for message in messages)
    return Content(prompt=prompt, turns=turns, response_format=fmt)


def validate(content: Content, max_conversation_bytes: int) -> None:
    """InvalidArgument saying what is wrong with a request's content (for a
    conversation, naming the message by its index). A prompt's own limits (empty,
    too large) are the sanitizer's to judge, as before conversations."""
    if content.prompt and content.turns:
        raise InvalidArgument("set either prompt or messages, not both")
    if not content.prompt and not content.turns:
        raise InvalidArgument("the request is empty: set prompt, or messages for a chat")
    if content.turns:
        check_conversation(content.turns, max_conversation_bytes)


def check_conversation(turns: Sequence[Turn], max_bytes: int) -> None:
    """InvalidArgument unless: known roles; a system turn only first; no empty turn; a
    user turn last; everything within `max_bytes`."""
    for index, turn in enumerate(turns):
        where = f"messages[{index}]"
        if turn.role not in ROLE_NAMES:
            raise InvalidArgument(
                f"{where} has role {turn.role}; use ROLE_SYSTEM, ROLE_USER or ROLE_ASSISTANT"
            )
        if turn.role == types_pb2.ROLE_SYSTEM and index > 0:
            raise InvalidArgument(
                f"{where} is a system turn; a system turn may only be the first message"
            )
        if not turn.content.strip():
            raise InvalidArgument(f"{where} ({turn.role_name}) is empty: give it some text")
    if turns[-1].role != types_pb2.ROLE_USER:
        raise InvalidArgument(
            f"messages[{len(turns) - 1}] is the {turns[-1].role_name} turn; "
            "a conversation must end with a user turn"
        )
    sizes = [len(turn.content.encode()) for turn in turns]
    if sum(sizes) > max_bytes:
        longest = max(range(len(sizes)), key=sizes.__getitem__)
        raise InvalidArgument(
            f"the conversation is {sum(sizes)} bytes; the limit is {max_bytes}: drop or "
            f"shorten earlier turns (the longest is messages[{longest}], {sizes[longest]} bytes)"
        )
