from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class CheckPromptRequest(_message.Message):
    __slots__ = ("prompt", "tier")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    tier: str
    def __init__(self, prompt: _Optional[str] = ..., tier: _Optional[str] = ...) -> None: ...

class CheckPromptResponse(_message.Message):
    __slots__ = ("prompt", "redactions", "output_unfiltered")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    REDACTIONS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_UNFILTERED_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    redactions: _containers.RepeatedScalarFieldContainer[str]
    output_unfiltered: bool
    def __init__(self, prompt: _Optional[str] = ..., redactions: _Optional[_Iterable[str]] = ..., output_unfiltered: _Optional[bool] = ...) -> None: ...

class FilterStreamRequest(_message.Message):
    __slots__ = ("text", "end", "tier")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    text: str
    end: bool
    tier: str
    def __init__(self, text: _Optional[str] = ..., end: _Optional[bool] = ..., tier: _Optional[str] = ...) -> None: ...

class FilterStreamResponse(_message.Message):
    __slots__ = ("text", "blocked", "rule_id")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    BLOCKED_FIELD_NUMBER: _ClassVar[int]
    RULE_ID_FIELD_NUMBER: _ClassVar[int]
    text: str
    blocked: bool
    rule_id: str
    def __init__(self, text: _Optional[str] = ..., blocked: _Optional[bool] = ..., rule_id: _Optional[str] = ...) -> None: ...
