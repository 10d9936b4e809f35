from headrace.types.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GenerateRequest(_message.Message):
    __slots__ = ("prompt", "model", "params", "messages", "response_format")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    model: str
    params: _types_pb2.SamplingParams
    messages: _containers.RepeatedCompositeFieldContainer[_types_pb2.ChatMessage]
    response_format: _types_pb2.ResponseFormat
    def __init__(self, prompt: _Optional[str] = ..., model: _Optional[str] = ..., params: _Optional[_Union[_types_pb2.SamplingParams, _Mapping]] = ..., messages: _Optional[_Iterable[_Union[_types_pb2.ChatMessage, _Mapping]]] = ..., response_format: _Optional[_Union[_types_pb2.ResponseFormat, _Mapping]] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("text", "finish_reason", "usage", "model", "provider")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    text: str
    finish_reason: _types_pb2.FinishReason
    usage: _types_pb2.Usage
    model: str
    provider: str
    def __init__(self, text: _Optional[str] = ..., finish_reason: _Optional[_Union[_types_pb2.FinishReason, str]] = ..., usage: _Optional[_Union[_types_pb2.Usage, _Mapping]] = ..., model: _Optional[str] = ..., provider: _Optional[str] = ...) -> None: ...

class SpeculateRequest(_message.Message):
    __slots__ = ("request", "commit")
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    request: GenerateRequest
    commit: bool
    def __init__(self, request: _Optional[_Union[GenerateRequest, _Mapping]] = ..., commit: _Optional[bool] = ...) -> None: ...

class SpeculateResponse(_message.Message):
    __slots__ = ("response",)
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    response: GenerateResponse
    def __init__(self, response: _Optional[_Union[GenerateResponse, _Mapping]] = ...) -> None: ...

class ListModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelInfo, _Mapping]]] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("name", "context_size", "is_default", "gpu_layers", "revision", "aliases", "provider", "hosted", "supports_json_schema", "supports_grammar")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_SIZE_FIELD_NUMBER: _ClassVar[int]
    IS_DEFAULT_FIELD_NUMBER: _ClassVar[int]
    GPU_LAYERS_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    ALIASES_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    HOSTED_FIELD_NUMBER: _ClassVar[int]
    SUPPORTS_JSON_SCHEMA_FIELD_NUMBER: _ClassVar[int]
    SUPPORTS_GRAMMAR_FIELD_NUMBER: _ClassVar[int]
    name: str
    context_size: int
    is_default: bool
    gpu_layers: int
    revision: str
    aliases: _containers.RepeatedScalarFieldContainer[str]
    provider: str
    hosted: bool
    supports_json_schema: bool
    supports_grammar: bool
    def __init__(self, name: _Optional[str] = ..., context_size: _Optional[int] = ..., is_default: _Optional[bool] = ..., gpu_layers: _Optional[int] = ..., revision: _Optional[str] = ..., aliases: _Optional[_Iterable[str]] = ..., provider: _Optional[str] = ..., hosted: _Optional[bool] = ..., supports_json_schema: _Optional[bool] = ..., supports_grammar: _Optional[bool] = ...) -> None: ...
