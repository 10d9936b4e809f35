from headrace.types.v1 import types_pb2 as _types_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CacheKey(_message.Message):
    __slots__ = ("model", "prompt", "params", "subject", "task", "revision", "content_digest", "output_policy")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    CONTENT_DIGEST_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_POLICY_FIELD_NUMBER: _ClassVar[int]
    model: str
    prompt: str
    params: _types_pb2.SamplingParams
    subject: str
    task: str
    revision: str
    content_digest: str
    output_policy: str
    def __init__(self, model: _Optional[str] = ..., prompt: _Optional[str] = ..., params: _Optional[_Union[_types_pb2.SamplingParams, _Mapping]] = ..., subject: _Optional[str] = ..., task: _Optional[str] = ..., revision: _Optional[str] = ..., content_digest: _Optional[str] = ..., output_policy: _Optional[str] = ...) -> None: ...

class LookupRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: CacheKey
    def __init__(self, key: _Optional[_Union[CacheKey, _Mapping]] = ...) -> None: ...

class LookupResponse(_message.Message):
    __slots__ = ("hit", "text", "finish_reason", "usage")
    HIT_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    hit: bool
    text: str
    finish_reason: _types_pb2.FinishReason
    usage: _types_pb2.Usage
    def __init__(self, hit: _Optional[bool] = ..., text: _Optional[str] = ..., finish_reason: _Optional[_Union[_types_pb2.FinishReason, str]] = ..., usage: _Optional[_Union[_types_pb2.Usage, _Mapping]] = ...) -> None: ...

class StoreRequest(_message.Message):
    __slots__ = ("key", "text", "complete", "finish_reason", "usage")
    KEY_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    key: CacheKey
    text: str
    complete: bool
    finish_reason: _types_pb2.FinishReason
    usage: _types_pb2.Usage
    def __init__(self, key: _Optional[_Union[CacheKey, _Mapping]] = ..., text: _Optional[str] = ..., complete: _Optional[bool] = ..., finish_reason: _Optional[_Union[_types_pb2.FinishReason, str]] = ..., usage: _Optional[_Union[_types_pb2.Usage, _Mapping]] = ...) -> None: ...

class StoreResponse(_message.Message):
    __slots__ = ("stored",)
    STORED_FIELD_NUMBER: _ClassVar[int]
    stored: bool
    def __init__(self, stored: _Optional[bool] = ...) -> None: ...

class AnswerRequest(_message.Message):
    __slots__ = ("key", "text", "complete", "finish_reason", "usage")
    KEY_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    key: CacheKey
    text: str
    complete: bool
    finish_reason: _types_pb2.FinishReason
    usage: _types_pb2.Usage
    def __init__(self, key: _Optional[_Union[CacheKey, _Mapping]] = ..., text: _Optional[str] = ..., complete: _Optional[bool] = ..., finish_reason: _Optional[_Union[_types_pb2.FinishReason, str]] = ..., usage: _Optional[_Union[_types_pb2.Usage, _Mapping]] = ...) -> None: ...

class AnswerResponse(_message.Message):
    __slots__ = ("hit", "text", "finish_reason", "usage", "stored")
    HIT_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    STORED_FIELD_NUMBER: _ClassVar[int]
    hit: bool
    text: str
    finish_reason: _types_pb2.FinishReason
    usage: _types_pb2.Usage
    stored: bool
    def __init__(self, hit: _Optional[bool] = ..., text: _Optional[str] = ..., finish_reason: _Optional[_Union[_types_pb2.FinishReason, str]] = ..., usage: _Optional[_Union[_types_pb2.Usage, _Mapping]] = ..., stored: _Optional[bool] = ...) -> None: ...

class GetStatsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatsResponse(_message.Message):
    __slots__ = ("backend", "hits", "shared", "semantic", "misses", "stores", "errors", "entries")
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    HITS_FIELD_NUMBER: _ClassVar[int]
    SHARED_FIELD_NUMBER: _ClassVar[int]
    SEMANTIC_FIELD_NUMBER: _ClassVar[int]
    MISSES_FIELD_NUMBER: _ClassVar[int]
    STORES_FIELD_NUMBER: _ClassVar[int]
    ERRORS_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    backend: str
    hits: int
    shared: int
    semantic: int
    misses: int
    stores: int
    errors: int
    entries: int
    def __init__(self, backend: _Optional[str] = ..., hits: _Optional[int] = ..., shared: _Optional[int] = ..., semantic: _Optional[int] = ..., misses: _Optional[int] = ..., stores: _Optional[int] = ..., errors: _Optional[int] = ..., entries: _Optional[int] = ...) -> None: ...

class FlushRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class FlushResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    def __init__(self, deleted: _Optional[int] = ...) -> None: ...
