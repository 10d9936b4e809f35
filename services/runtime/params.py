"""SamplingParams rules shared by the services: validation (the router at the edge,
and inference) and determinism (the cache keeps, and the router looks up, only
requests that give the same text every time)."""

from __future__ import annotations

from headrace.services.runtime.errors import InvalidArgument
from headrace.types.v1 import types_pb2


def is_deterministic(params: types_pb2.SamplingParams) -> bool:
    """The same request gives the same text: greedy decoding (temperature 0) or a
    fixed seed. An unset temperature is not 0 (the router fills in its default)."""
    greedy = params.HasField("temperature") and params.temperature == 0.0
    return greedy or params.HasField("seed")


def validate_params(params: types_pb2.SamplingParams, max_tokens_limit: int) -> None:
    """Raise InvalidArgument naming the first set parameter that is out of range."""
    if params.HasField("max_tokens") and not 1 <= params.max_tokens <= max_tokens_limit:
        raise InvalidArgument(f"max_tokens must be between 1 and {max_tokens_limit}")
    if params.HasField("temperature") and not 0.0 <= params.temperature <= 2.0:
        raise InvalidArgument("temperature must be between 0 and 2")
    if params.HasField("top_p") and not 0.0 < params.top_p <= 1.0:
        raise InvalidArgument("top_p must be greater than 0 and at most 1")
    if params.HasField("top_k") and params.top_k < 0:
        raise InvalidArgument("top_k must be 0 (off) or positive")
    if params.HasField("repeat_penalty") and not 0.0 < params.repeat_penalty <= 10.0:
        raise InvalidArgument("repeat_penalty must be greater than 0 and at most 10")
    if len(params.stop) > 16 or any(not s or len(s) > 256 for s in params.stop):
        raise InvalidArgument("stop takes at most 16 non-empty strings of up to 256 characters")
