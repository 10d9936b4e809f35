"""Structured output: the JSON Schema allow-list and its compilation to a grammar."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from headrace.services.inference.structured import grammar_for, schema_grammar
from headrace.services.runtime.errors import InvalidArgument
from headrace.types.v1 import types_pb2

PERSON = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer"}},
    "required": ["name", "age"],
    "additionalProperties": False,
}


def test_a_schema_of_supported_keywords_compiles_to_a_grammar_with_a_root_rule() -> None:
    grammar = schema_grammar(json.dumps({**PERSON, "title": "Person", "description": "x"}))
    assert "root ::=" in grammar


@pytest.mark.parametrize(
    ("keyword", "schema", "where"),
    [
        ("minimum", {"properties": {"age": {"type": "string", "minimum": 0}}}, "/properties/age"),
        ("multipleOf", {"properties": {"n": {"type": "number", "multipleOf": 2}}}, "/properties/n"),
        ("uniqueItems", {"type": "array", "uniqueItems": True}, "/"),
        ("not", {"anyOf": [{"not": {"type": "string"}}]}, "/anyOf/0"),
        ("if", {"if": {"type": "string"}, "then": {"minLength": 2}}, "/"),
        ("patternProperties", {"patternProperties": {"^x": {}}}, "/"),
        ("maximum", {"$defs": {"a/b": {"maximum": 3}}}, "/$defs/a~1b"),
        ("exclusiveMinimum", {"items": {"exclusiveMinimum": 1}}, "/items"),
    ],
)
def test_an_unsupported_keyword_is_refused_naming_it_and_where_it_is(
    keyword: str, schema: dict, where: str
) -> None:
    with pytest.raises(InvalidArgument) as info:
        schema_grammar(json.dumps({"type": "object", **schema}))
    assert f"keyword {keyword!r} at {where}" in info.value.message


@pytest.mark.parametrize(
    ("schema", "says"),
    [
        ("{not json", "not JSON"),
        (json.dumps({"type": "decimal"}), "unknown JSON Schema type 'decimal'"),
        (json.dumps({"type": "string", "format": "email"}), "format 'email'"),
        (json.dumps({"$ref": "https://example.com/s.json"}), "only references within"),
        (json.dumps({"type": "string", "pattern": "(?<=a)b"}), "cannot be compiled"),
        (json.dumps([1, 2]), "is not an object"),
    ],
)
def test_a_schema_that_cannot_be_held_is_invalid_not_a_crash(schema: str, says: str) -> None:
    with pytest.raises(InvalidArgument, match=says):
        schema_grammar(schema)


def test_response_formats_map_to_grammars() -> None:
    assert grammar_for(types_pb2.ResponseFormat()) is None
    assert "root" in (grammar_for(types_pb2.ResponseFormat(json_object=True)) or "")
    assert grammar_for(types_pb2.ResponseFormat(grammar='root ::= "yes"')) == 'root ::= "yes"'
    with pytest.raises(InvalidArgument, match="grammar is empty"):
        grammar_for(types_pb2.ResponseFormat(grammar="  "))


def test_a_schema_string_never_holds_a_raw_control_character_or_a_stray_quote(
    tiny_model: Path,
) -> None:
    # JSON forbids raw control characters in a string; llama-cpp-python's converter
    # allowed them, and the default model once wrote a raw newline inside "name". Here
    # llama.cpp's own grammar sampler judges single tokens inside an open string.
    import ctypes

    import llama_cpp
    import numpy as np

    from headrace.services.inference.engine import _TOKEN_DATA, LlamaEngine, _token_array
    from headrace.services.inference.settings import ModelSpec

    engine = LlamaEngine(
        ModelSpec(name="tiny-structured", path=tiny_model), tiny_model, slots=1, queue_size=1
    )
    try:

        def tokens(text: str) -> list[int]:
            # Without BOS, and without the space SentencePiece puts before the text.
            found = engine.tokenize(text)[1:]
            return found[1:] if engine._piece(found[0]) == b" " else found

        def accepts(after: str, text: str, schema: dict = PERSON) -> bool:
            sampler = engine.grammar_sampler(schema_grammar(json.dumps(schema)))
            try:
                for token in tokens(after):
                    llama_cpp.llama_sampler_accept(sampler, token)
                (token,) = tokens(text)
                one = np.array([(token, 1.0, 0.0)], dtype=_TOKEN_DATA)
                llama_cpp.llama_sampler_apply(sampler, ctypes.byref(_token_array(one)))
                return not np.isneginf(one["logit"][0])
            finally:
                llama_cpp.llama_sampler_free(sampler)

        assert accepts('{"name": "ab', "c"), "an ordinary character (' c') goes on the string"
        assert not accepts('{"name": "ab', "\n"), "a raw newline inside a JSON string"
        assert not accepts('{"name": "ab', "\t"), "a raw tab inside a JSON string"
        # A pattern's `.` is written into the string unescaped as well.
        dotted = {"type": "object", "properties": {"p": {"type": "string", "pattern": "^a.b$"}}}
        assert accepts('{"p": "a', "b", dotted), "' ' for the dot, then 'b'"
        assert not accepts('{"p": "a', "\t", dotted)
        assert not accepts('{"p": "a', '"', dotted), "a quote would end the string early"
    finally:
        engine.close()


def test_the_string_rule_is_narrowed_to_what_json_allows() -> None:
    grammar = schema_grammar(json.dumps(PERSON))
    [char] = [line for line in grammar.split("\n") if line.startswith("char ::=")]
    assert char.startswith('char ::= [^"\\\\\\x7F\\x00-\\x1F] |'), char
