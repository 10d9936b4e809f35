"""Structured output: a response_format as a GBNF grammar for llama.cpp's grammar sampler.

llama-cpp-python's JSON Schema converter silently drops keywords it does not handle
(`minimum`/`maximum` are a TODO in its source; `multipleOf`, `uniqueItems`, `not`, `if`
and `patternProperties` are ignored), so output would "obey" a schema it does not.
Here a schema may use only the keywords on an explicit allow-list, each known to be
enforced by the grammar; any other is INVALID_ARGUMENT naming the keyword and where it
is (a JSON Pointer). Bounds on integers and numbers are written into the grammar
here (json_range.py). A schema the converter still cannot handle (some regex patterns)
is INVALID_ARGUMENT too, never a crash.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from llama_cpp.llama_grammar import JSON_GBNF, RESERVED_NAMES, BuiltinRule, SchemaConverter

from headrace.services.inference.json_pattern import JSON_STRING_CHAR, pattern_expression
from headrace.services.inference.json_range import (
    BOUNDS,
    integer_bounds,
    integer_expression,
    number_bounds,
    number_expression,
)
from headrace.services.runtime.errors import InvalidArgument
from headrace.types.v1 import types_pb2

ENFORCED = frozenset(
    {
        "type",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "prefixItems",
        "minItems",
        "maxItems",
        "enum",
        "const",
        "anyOf",
        "oneOf",
        "allOf",
        "$ref",
        "$defs",
        "definitions",
        "pattern",
        "minLength",
        "maxLength",
        "format",
        *BOUNDS,
    }
)
"""Keywords the grammar enforces (the bounds on integers and numbers only)."""

ANNOTATIONS = frozenset(
    {
        "$schema",
        "$id",
        "$comment",
        "title",
        "description",
        "default",
        "examples",
        "deprecated",
        "readOnly",
        "writeOnly",
    }
)
"""Keywords that only describe; they constrain nothing, so they are accepted."""

SUPPORTED = ENFORCED | ANNOTATIONS
_BOUNDS_ALONE = frozenset({"enum", "const", "anyOf", "oneOf", "allOf", "$ref"})
"""Keywords the converter would follow instead of an integer's bounds."""
TYPES = frozenset({"string", "number", "integer", "boolean", "null", "object", "array"})
FORMATS = frozenset({"date", "time", "date-time", "uuid"})

# Keywords whose value is a map of name → subschema, a subschema, or a list of them.
_SCHEMA_MAPS = ("properties", "$defs", "definitions")
_SCHEMA_LISTS = ("prefixItems", "anyOf", "oneOf", "allOf")
_SCHEMA_VALUES = ("items", "additionalProperties")


def grammar_for(response_format: types_pb2.ResponseFormat) -> str | None:
    """The GBNF grammar for a response format; None for free text."""
    kind = response_format.WhichOneof("format")
    if kind is None or (kind == "json_object" and not response_format.json_object):
        return None
    if kind == "json_object":
        return JSON_GBNF
    if kind == "grammar":
        if not response_format.grammar.strip():
            raise InvalidArgument("response_format.grammar is empty: give a GBNF grammar")
        return response_format.grammar
    return schema_grammar(response_format.json_schema)


class _Converter(SchemaConverter):
    """llama-cpp-python's converter, with patterns compiled for JSON text
    (json_pattern.py) instead of copied into the grammar."""

    def visit(self, schema: Any, name: str) -> str:
        # The converter compiles `pattern` and drops a string's other constraints.
        if isinstance(schema, dict) and "pattern" in schema:
            beside = sorted({"minLength", "maxLength", "format"} & schema.keys())
            if beside:
                raise InvalidArgument(
                    f"a string schema ({name or 'root'}) with both 'pattern' and "
                    f"{', '.join(repr(k) for k in beside)}: the grammar can hold only one; "
                    "fold the length into the pattern (e.g. ^[a-z]{2,8}$)"
                )
        if isinstance(schema, dict) and BOUNDS & schema.keys():  # checked in check_schema
            rule_name = name + "-" if name in RESERVED_NAMES else name or "root"
            if schema.get("type") == "integer":
                expression = integer_expression(*integer_bounds(schema, rule_name))
            else:
                expression = number_expression(*number_bounds(schema, rule_name))
            return self._add_rule(rule_name, expression + " space")
        return super().visit(schema, name)

    def _add_primitive(self, name: str, rule: BuiltinRule) -> str:
        # llama-cpp-python's `char` lets a string hold raw newlines and other control
        # characters, which JSON forbids: at temperature 0.8 the default model wrote
        # {"name": "The Little Book of<newline>(", ...}, which no JSON parser reads.
        return super()._add_primitive(name, _JSON_CHAR if name == "char" else rule)

    def _visit_pattern(self, pattern: str, name: str) -> str:
        body = pattern_expression(pattern, lambda: self._add_primitive("char", _JSON_CHAR))
        return self._add_rule(name, '"\\"" ' + body + ' "\\"" space')


_JSON_CHAR = BuiltinRule(JSON_STRING_CHAR, [])


def schema_grammar(text: str) -> str:
    """A JSON Schema (as JSON text) compiled to GBNF, after the allow-list check."""
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"response_format.json_schema is not JSON: {exc}") from None
    check_schema(schema)
    converter = _Converter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)
    try:
        converter.visit(converter.resolve_refs(schema, "schema"), "")
        grammar = converter.format_grammar()
    except InvalidArgument:
        raise
    except Exception as exc:  # the converter asserts or raises on what it cannot handle
        raise InvalidArgument(
            f"the JSON Schema cannot be compiled to a grammar ({type(exc).__name__}: "
            f"{str(exc)[:200] or 'unsupported construct'}); simplify it"
        ) from None
    return grammar


def check_schema(schema: Any, pointer: str = "") -> None:
    """InvalidArgument naming the first keyword outside the allow-list and where it is."""
    for where, keyword, value, holder in _keywords(schema, pointer):
        if keyword in BOUNDS:
            if holder.get("type") not in ("integer", "number"):
                raise InvalidArgument(
                    f'JSON Schema keyword {keyword!r} at {where or "/"} needs "type": '
                    '"integer" or "number" beside it: the grammar holds bounds on one '
                    "numeric type only"
                )
            beside = sorted(_BOUNDS_ALONE & holder.keys())
            if beside:
                # The converter would take the enum or union and drop the bounds.
                raise InvalidArgument(
                    f"JSON Schema keyword {keyword!r} at {where or '/'} beside "
                    f"{', '.join(repr(k) for k in beside)}: the grammar cannot hold both; "
                    "list only the allowed values, or put the bounds inside each alternative"
                )
            try:
                if holder["type"] == "integer":
                    integer_bounds(holder, where or "/")
                else:
                    number_bounds(holder, where or "/")
            except ValueError as exc:
                raise InvalidArgument(str(exc)) from None
        if keyword not in SUPPORTED:
            raise InvalidArgument(
                f"unsupported JSON Schema keyword {keyword!r} at {where or '/'}: the output "
                f"could not be held to it; supported: {', '.join(sorted(ENFORCED))} "
                "(and annotations such as description)"
            )
        if keyword == "type":
            types = value if isinstance(value, list) else [value]
            unknown = [t for t in types if t not in TYPES]
            if unknown:
                raise InvalidArgument(f"unknown JSON Schema type {unknown[0]!r} at {where}/type")
        if keyword == "format" and value not in FORMATS:
            raise InvalidArgument(
                f"unsupported JSON Schema format {value!r} at {where}/format; "
                f"supported: {', '.join(sorted(FORMATS))}"
            )
        if keyword == "$ref" and not (isinstance(value, str) and value.startswith("#/")):
            raise InvalidArgument(
                f"unsupported $ref {value!r} at {where}: only references within the schema "
                "(#/$defs/...) are followed"
            )


def _keywords(schema: Any, pointer: str) -> Iterator[tuple[str, str, Any, dict[str, Any]]]:
    """(pointer of the schema, keyword, value, the schema) for every keyword of every
    subschema."""
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        raise InvalidArgument(f"the JSON Schema at {pointer or '/'} is not an object")
    for keyword, value in schema.items():
        yield pointer, keyword, value, schema
        here = f"{pointer}/{_escape(keyword)}"
        if keyword in _SCHEMA_MAPS and isinstance(value, dict):
            for name, sub in value.items():
                yield from _keywords(sub, f"{here}/{_escape(name)}")
        elif keyword in _SCHEMA_LISTS and isinstance(value, list):
            for index, sub in enumerate(value):
                yield from _keywords(sub, f"{here}/{index}")
        elif keyword in _SCHEMA_VALUES:
            yield from _keywords(value, here)


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")
