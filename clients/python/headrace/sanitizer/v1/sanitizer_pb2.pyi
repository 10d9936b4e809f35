from headrace.types.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class OutputRuleAction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OUTPUT_RULE_ACTION_UNSPECIFIED: _ClassVar[OutputRuleAction]
    OUTPUT_RULE_ACTION_BLOCK: _ClassVar[OutputRuleAction]
    OUTPUT_RULE_ACTION_REDACT: _ClassVar[OutputRuleAction]
    OUTPUT_RULE_ACTION_ALLOW: _ClassVar[OutputRuleAction]
OUTPUT_RULE_ACTION_UNSPECIFIED: OutputRuleAction
OUTPUT_RULE_ACTION_BLOCK: OutputRuleAction
OUTPUT_RULE_ACTION_REDACT: OutputRuleAction
OUTPUT_RULE_ACTION_ALLOW: OutputRuleAction

class CheckPromptRequest(_message.Message):
    __slots__ = ("prompt", "tier", "messages")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    TIER_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    tier: str
    messages: _containers.RepeatedCompositeFieldContainer[_types_pb2.ChatMessage]
    def __init__(self, prompt: _Optional[str] = ..., tier: _Optional[str] = ..., messages: _Optional[_Iterable[_Union[_types_pb2.ChatMessage, _Mapping]]] = ...) -> None: ...

class CheckPromptResponse(_message.Message):
    __slots__ = ("prompt", "redactions", "output_unfiltered", "messages", "flags", "decided_by", "injection_score")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    REDACTIONS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_UNFILTERED_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    DECIDED_BY_FIELD_NUMBER: _ClassVar[int]
    INJECTION_SCORE_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    redactions: _containers.RepeatedScalarFieldContainer[str]
    output_unfiltered: bool
    messages: _containers.RepeatedCompositeFieldContainer[_types_pb2.ChatMessage]
    flags: _containers.RepeatedScalarFieldContainer[str]
    decided_by: str
    injection_score: float
    def __init__(self, prompt: _Optional[str] = ..., redactions: _Optional[_Iterable[str]] = ..., output_unfiltered: _Optional[bool] = ..., messages: _Optional[_Iterable[_Union[_types_pb2.ChatMessage, _Mapping]]] = ..., flags: _Optional[_Iterable[str]] = ..., decided_by: _Optional[str] = ..., injection_score: _Optional[float] = ...) -> None: ...

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

class WatchOutputPolicyRequest(_message.Message):
    __slots__ = ("known_version",)
    KNOWN_VERSION_FIELD_NUMBER: _ClassVar[int]
    known_version: str
    def __init__(self, known_version: _Optional[str] = ...) -> None: ...

class WatchOutputPolicyResponse(_message.Message):
    __slots__ = ("version", "policies", "heartbeat_seconds")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    POLICIES_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    version: str
    policies: OutputPolicySet
    heartbeat_seconds: float
    def __init__(self, version: _Optional[str] = ..., policies: _Optional[_Union[OutputPolicySet, _Mapping]] = ..., heartbeat_seconds: _Optional[float] = ...) -> None: ...

class OutputPolicySet(_message.Message):
    __slots__ = ("default_policy", "tiers")
    class TiersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: OutputPolicy
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[OutputPolicy, _Mapping]] = ...) -> None: ...
    DEFAULT_POLICY_FIELD_NUMBER: _ClassVar[int]
    TIERS_FIELD_NUMBER: _ClassVar[int]
    default_policy: OutputPolicy
    tiers: _containers.MessageMap[str, OutputPolicy]
    def __init__(self, default_policy: _Optional[_Union[OutputPolicy, _Mapping]] = ..., tiers: _Optional[_Mapping[str, OutputPolicy]] = ...) -> None: ...

class OutputPolicy(_message.Message):
    __slots__ = ("rules",)
    RULES_FIELD_NUMBER: _ClassVar[int]
    rules: _containers.RepeatedCompositeFieldContainer[OutputRule]
    def __init__(self, rules: _Optional[_Iterable[_Union[OutputRule, _Mapping]]] = ...) -> None: ...

class OutputRule(_message.Message):
    __slots__ = ("id", "category", "action", "placeholder", "terms", "pattern")
    ID_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    PLACEHOLDER_FIELD_NUMBER: _ClassVar[int]
    TERMS_FIELD_NUMBER: _ClassVar[int]
    PATTERN_FIELD_NUMBER: _ClassVar[int]
    id: str
    category: str
    action: OutputRuleAction
    placeholder: str
    terms: OutputTerms
    pattern: OutputPattern
    def __init__(self, id: _Optional[str] = ..., category: _Optional[str] = ..., action: _Optional[_Union[OutputRuleAction, str]] = ..., placeholder: _Optional[str] = ..., terms: _Optional[_Union[OutputTerms, _Mapping]] = ..., pattern: _Optional[_Union[OutputPattern, _Mapping]] = ...) -> None: ...

class OutputTerms(_message.Message):
    __slots__ = ("terms", "whole_word")
    TERMS_FIELD_NUMBER: _ClassVar[int]
    WHOLE_WORD_FIELD_NUMBER: _ClassVar[int]
    terms: _containers.RepeatedScalarFieldContainer[str]
    whole_word: bool
    def __init__(self, terms: _Optional[_Iterable[str]] = ..., whole_word: _Optional[bool] = ...) -> None: ...

class OutputPattern(_message.Message):
    __slots__ = ("regex", "flags", "max_length", "partial", "partial_flags", "closing", "closing_flags", "needs", "finder")
    REGEX_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FLAGS_FIELD_NUMBER: _ClassVar[int]
    CLOSING_FIELD_NUMBER: _ClassVar[int]
    CLOSING_FLAGS_FIELD_NUMBER: _ClassVar[int]
    NEEDS_FIELD_NUMBER: _ClassVar[int]
    FINDER_FIELD_NUMBER: _ClassVar[int]
    regex: str
    flags: int
    max_length: int
    partial: str
    partial_flags: int
    closing: str
    closing_flags: int
    needs: _containers.RepeatedScalarFieldContainer[str]
    finder: str
    def __init__(self, regex: _Optional[str] = ..., flags: _Optional[int] = ..., max_length: _Optional[int] = ..., partial: _Optional[str] = ..., partial_flags: _Optional[int] = ..., closing: _Optional[str] = ..., closing_flags: _Optional[int] = ..., needs: _Optional[_Iterable[str]] = ..., finder: _Optional[str] = ...) -> None: ...
