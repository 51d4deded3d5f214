"""JSON schemas for the structured-output fuzz test: every keyword OpenAI's Structured Outputs document,
alone and combined (issue 17 section 1). Bounds are kept small where a random model would otherwise write
until the token limit, so that most answers finish and get validated."""

from __future__ import annotations

_DIGIT = {"type": "integer", "minimum": 0, "maximum": 9}
_WORD = {"type": "string", "maxLength": 6}

SCHEMAS: dict[str, dict] = {
    # issue 17's own example: integer bounds, required, no extra properties
    "bounded_integer": {"type": "object", "properties": {"ok": {"type": "boolean"}, "n": _DIGIT},
                        "required": ["ok", "n"], "additionalProperties": False},
    "number_bounds": {"type": "object", "properties": {
        "a": {"type": "number", "minimum": -1.5, "maximum": 2.25},
        "b": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        "c": {"type": "integer", "exclusiveMinimum": -3, "exclusiveMaximum": 3}},
        "required": ["a", "b", "c"], "additionalProperties": False},
    "multiple_of": {"type": "object", "properties": {
        "seven": {"type": "integer", "multipleOf": 7, "minimum": -70, "maximum": 70},
        "half": {"type": "number", "multipleOf": 0.5, "minimum": 0, "maximum": 10}},
        "required": ["seven", "half"], "additionalProperties": False},
    "nullable_union": {"type": "object", "properties": {
        "maybe": {"type": ["string", "null"], "maxLength": 4},
        "either": {"anyOf": [{"type": "integer", "minimum": 1, "maximum": 5}, {"type": "null"}]}},
        "required": ["maybe", "either"], "additionalProperties": False},
    "enum_const": {"type": "object", "properties": {
        "color": {"enum": ["red", "green", "blue", 3, None]},
        "kind": {"const": "point"}, "flag": {"const": True}},
        "required": ["color", "kind", "flag"], "additionalProperties": False},
    "any_of": {"anyOf": [
        {"type": "object", "properties": {"cat": {"const": "meow"}, "lives": _DIGIT},
         "required": ["cat", "lives"], "additionalProperties": False},
        {"type": "array", "items": {"type": "boolean"}, "maxItems": 3},
        {"type": "integer", "minimum": 100, "maximum": 200}]},
    "string_lengths": {"type": "object", "properties": {
        "code": {"type": "string", "minLength": 3, "maxLength": 3},
        "short": {"type": "string", "minLength": 1, "maxLength": 5}},
        "required": ["code", "short"], "additionalProperties": False},
    "patterns": {"type": "object", "properties": {
        "id": {"type": "string", "pattern": "^[A-Z]{2}-[0-9]{3}$"},
        "greek": {"type": "string", "pattern": "^[α-ω]{1,4}$"},
        "han": {"type": "string", "pattern": "^[\u4e00-\u9fff]{1,3}!?$"}},
        "required": ["id", "greek", "han"], "additionalProperties": False},
    "formats": {"type": "object", "properties": {
        "when": {"type": "string", "format": "date-time"},
        "day": {"type": "string", "format": "date"},
        "at": {"type": "string", "format": "time"},
        "mail": {"type": "string", "format": "email", "maxLength": 24},
        "uid": {"type": "string", "format": "uuid"}},
        "required": ["when", "day", "at", "mail", "uid"], "additionalProperties": False},
    "array_counts": {"type": "object", "properties": {
        "pair": {"type": "array", "items": _DIGIT, "minItems": 2, "maxItems": 2},
        "few": {"type": "array", "items": {"enum": ["x", "y"]}, "minItems": 1, "maxItems": 3}},
        "required": ["pair", "few"], "additionalProperties": False},
    "nested": {"type": "object", "properties": {
        "person": {"type": "object", "properties": {"name": _WORD, "age": {"type": "integer", "minimum": 0,
                                                                           "maximum": 150}},
                   "required": ["name", "age"], "additionalProperties": False},
        "tags": {"type": "array", "items": {"type": "object", "properties": {"t": _WORD}, "required": ["t"],
                                            "additionalProperties": False}, "maxItems": 2}},
        "required": ["person", "tags"], "additionalProperties": False},
    "defs_ref": {"$defs": {"point": {"type": "object", "properties": {"x": _DIGIT, "y": _DIGIT},
                                     "required": ["x", "y"], "additionalProperties": False}},
                 "type": "object", "properties": {"from": {"$ref": "#/$defs/point"}, "to": {"$ref": "#/$defs/point"}},
                 "required": ["from", "to"], "additionalProperties": False},
    "recursive": {"$defs": {"node": {"type": "object", "properties": {
        "v": _DIGIT, "kids": {"type": "array", "items": {"$ref": "#/$defs/node"}, "maxItems": 2}},
        "required": ["v", "kids"], "additionalProperties": False}},
        "$ref": "#/$defs/node"},
    "optional_and_extra": {"type": "object", "properties": {"a": _DIGIT, "b": {"type": "boolean"}},
                           "required": ["a"], "additionalProperties": {"type": "integer", "minimum": 0, "maximum": 1}},
    # OpenAI's strict mode: every property required, no extras, optional ones as nullable unions
    "strict": {"type": "object", "properties": {
        "name": _WORD, "score": {"type": ["number", "null"], "minimum": 0, "maximum": 1},
        "level": {"type": "string", "enum": ["low", "high"]}},
        "required": ["name", "score", "level"], "additionalProperties": False},
    "deep": {"type": "object", "properties": {"a": {"type": "object", "properties": {"b": {"type": "object",
             "properties": {"c": {"type": "object", "properties": {"d": {"type": "array", "items": {
                 "type": "object", "properties": {"e": _DIGIT}, "required": ["e"], "additionalProperties": False},
                 "maxItems": 1}}, "required": ["d"], "additionalProperties": False}},
             "required": ["c"], "additionalProperties": False}}, "required": ["b"], "additionalProperties": False}},
             "required": ["a"], "additionalProperties": False},
    "top_level_scalar": {"type": "integer", "minimum": -5, "maximum": 5},
}

# Answers a random model may write until the token limit: the digits of a number without multipleOf, a
# second's fraction, names of extra properties.
LONG = ("number_bounds", "formats", "optional_and_extra")

# issue 20: bounds that made llama.cpp's grammar recurse out of its stack or build hundreds of MB
HUGE_BOUNDS: dict[str, dict] = {
    "maxLength": {"type": "string", "maxLength": 100000},
    "maxItems": {"type": "array", "items": {"type": "integer"}, "maxItems": 20000000},
    "minItems": {"type": "object", "properties": {"xs": {"type": "array", "minItems": 30000}}},
}

# what the engine cannot enforce: refused up front, the keyword named
UNENFORCEABLE: dict[str, dict] = {
    "uniqueItems": {"type": "array", "items": {"type": "integer"}, "uniqueItems": True},
    "not": {"type": "object", "properties": {"a": {"not": {"type": "string"}}}},
}
