"""JSON-schema answers and forced calls, enforced token by token with llguidance over gpt-oss's vocabulary.

A schema is compiled to an llguidance grammar. Bounds, patterns, formats and repetition counts stay
symbolic there (a `maxLength: 100000` or `maxItems: 20000000` is a counter, not an expanded rule), so a
schema's cost does not grow with its numbers. A keyword llguidance cannot enforce is refused with
BadInputError naming it, before anything is generated.

While a constrained part is sampled, `MaskedSampler` draws from the model's own distribution, checks that one
token with the matcher and, only when it is refused, computes the mask of allowed tokens over the whole
vocabulary and draws again from the masked logits: the result is distributed as a draw from the masked
logits. Control tokens are never allowed, except the end tokens (<|return|>, <|call|>) once the JSON is
complete.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from converters.errors import BadInputError, RunFailure
from converters.hf_tokenizer import O200K_PATTERN
from gptoss_cli.engine.harmony import CALL, FIRST_SPECIAL_ID, RETURN
from gptoss_cli.engine.sampling import Sampler

if TYPE_CHECKING:
    from llguidance._lib import JsonCompileOptions

# Compact JSON: no free whitespace (a model could otherwise pad an answer with spaces until the token limit).
JSON_OPTIONS: JsonCompileOptions = {"whitespace_flexible": False, "item_separator": ",", "key_separator": ":"}
END_TOKENS = (RETURN, CALL)
CACHE_BYTES = 16 * 1024 * 1024   # compiled grammars kept, schema text + grammar text


class _Cache:
    """Compiled grammars by schema text, least recently used dropped first, capped by their size in bytes."""

    def __init__(self, limit: int) -> None:
        self.limit, self.size = limit, 0
        self._items: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> str | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: str, value: str) -> None:
        cost = len(key) + len(value)
        if cost > self.limit:
            return
        with self._lock:
            if key in self._items:
                return
            self._items[key] = value
            self.size += cost
            while self.size > self.limit:
                old_key, old = self._items.popitem(last=False)
                self.size -= len(old_key) + len(old)


_CACHE = _Cache(CACHE_BYTES)


def compile_schema(schema: Any) -> str:
    """The llguidance grammar of a JSON schema (None, True or {}: any JSON object); BadInputError names
    what cannot be enforced."""
    if schema is None or schema is True or schema == {}:
        schema = {"type": "object"}
    if not isinstance(schema, dict):
        raise BadInputError(None, "a JSON schema must be an object")
    try:
        text = json.dumps(closed(schema), allow_nan=False)   # key order kept: properties are written in it
    except (TypeError, ValueError) as exc:
        raise BadInputError(None, f"the JSON schema cannot be serialised: {exc}") from None
    cached = _CACHE.get(text)
    if cached is not None:
        return cached
    import llguidance

    try:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(text, overrides=JSON_OPTIONS)
    except ValueError as exc:
        raise BadInputError(None, f"unsupported JSON schema: {exc}") from None
    failed, notes = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
    if failed:
        raise BadInputError(None, f"unsupported JSON schema: {refusal(notes[0])}",
                            "Remove that keyword or express it with the supported ones") from None
    _CACHE.put(text, grammar)
    return grammar


_ONE = ("items", "additionalItems", "contains", "if", "then", "else", "not", "propertyNames",
        "unevaluatedItems", "unevaluatedProperties")
_MANY = ("anyOf", "oneOf", "prefixItems")
_NAMED = ("properties", "$defs", "definitions", "patternProperties", "dependentSchemas")


SAFE_INTEGER = 2**53 - 1   # I-JSON (RFC 7493): integers beyond it do not survive every JSON parser
# RFC 3339 dates and times as validators read them: llguidance's own formats let through second 60 at any
# time, February 29 of any year and year 0000, which Python's and most other date parsers refuse.
_YEAR = "(?:[1-9][0-9]{3}|0[1-9][0-9]{2}|00[1-9][0-9]|000[1-9])"
_LEAP = "(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
_MONTH_DAY = ("(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
              "|02-(?:0[1-9]|1[0-9]|2[0-8]))")
_DATE = f"(?:{_YEAR}-{_MONTH_DAY}|{_LEAP}-02-29)"
_TIME = "(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]{1,9})?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
FORMAT_PATTERNS = {"date": f"^{_DATE}$", "time": f"^{_TIME}$", "date-time": f"^{_DATE}T{_TIME}$"}


def closed(schema: Any, in_all_of: bool = False) -> Any:
    """The schema narrowed as llama.cpp's converter narrows it; an answer valid for it is valid for the schema.
    Objects that list properties are closed to others unless the schema says otherwise (as OpenAI's strict
    mode requires; allOf's branches are left open, each sees only part of the properties), an integer
    without a bound stays within +-SAFE_INTEGER, and dates and times follow FORMAT_PATTERNS."""
    if not isinstance(schema, dict):
        return schema
    out = dict(schema)
    types = out.get("type")
    if types == "integer" or (isinstance(types, list) and "integer" in types):
        _bound_integer(out)
    if out.get("format") in FORMAT_PATTERNS and "pattern" not in out:
        out["pattern"] = FORMAT_PATTERNS[out.pop("format")]
    if ("properties" in out and "additionalProperties" not in out and "patternProperties" not in out
            and "unevaluatedProperties" not in out and not in_all_of):
        out["additionalProperties"] = False
    for key in _ONE:
        if key in out:
            out[key] = closed(out[key])
    if isinstance(out.get("additionalProperties"), dict):
        out["additionalProperties"] = closed(out["additionalProperties"])
    for key in _MANY:
        if isinstance(out.get(key), list):
            out[key] = [closed(s) for s in out[key]]
    if isinstance(out.get("allOf"), list):
        out["allOf"] = [closed(s, in_all_of=True) for s in out["allOf"]]
    for key in _NAMED:
        if isinstance(out.get(key), dict):
            out[key] = {name: closed(s) for name, s in out[key].items()}
    return out


def _bound_integer(out: dict) -> None:
    """Add +-SAFE_INTEGER where an integer schema has no bound on that side (and the other side allows it)."""
    low = [v for k in ("minimum", "exclusiveMinimum") if isinstance(v := out.get(k), (int, float))]
    high = [v for k in ("maximum", "exclusiveMaximum") if isinstance(v := out.get(k), (int, float))]
    if not high and all(v < SAFE_INTEGER for v in low):
        out["maximum"] = SAFE_INTEGER
    if not low and all(v > -SAFE_INTEGER for v in high):
        out["minimum"] = -SAFE_INTEGER


def refusal(error: str) -> str:
    """llguidance's compile error as a reason that names the keyword."""
    text = error.strip().splitlines()[0] if error.strip() else "the schema cannot be compiled"
    for prefix in ("Unimplemented keys: ", "Unimplemented key: "):
        at = text.find(prefix)
        if at >= 0:
            try:
                keys = json.loads(text[at + len(prefix):])
            except ValueError:
                break
            keys = keys if isinstance(keys, list) else [keys]
            return f"{', '.join(map(str, keys))} cannot be enforced while generating"
    at = text.find("Unknown format: ")
    if at >= 0:
        return f"format {text[at + len('Unknown format: '):]} cannot be enforced while generating"
    return text


def names_grammar(names: list[str]) -> str:
    """An llguidance grammar that matches exactly one of the names."""
    import llguidance

    return llguidance.LLMatcher.grammar_from_lark("start: " + " | ".join(json.dumps(n) for n in names) + "\n")


def vocab_pieces(vocab: Any, n_vocab: int) -> list[bytes]:
    """The bytes of every token of a llama.cpp vocabulary (control tokens as their text)."""
    import ctypes

    import llama_cpp as lc

    buf = ctypes.create_string_buffer(256)
    pieces = []
    for token in range(n_vocab):
        n = lc.llama_token_to_piece(vocab, token, buf, len(buf), 0, True)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = lc.llama_token_to_piece(vocab, token, buf, len(buf), 0, True)
        pieces.append(buf.raw[:n])
    return pieces


def tokenizer(pieces: list[bytes]):
    """llguidance's tokenizer for gpt-oss's vocabulary (o200k_harmony: byte-level BPE with o200k's split
    pattern; ids from FIRST_SPECIAL_ID on are control tokens), the end tokens <|return|> and <|call|>."""
    import llguidance

    ranks = {piece: i for i, piece in enumerate(pieces[:FIRST_SPECIAL_ID])}
    if len(ranks) != min(len(pieces), FIRST_SPECIAL_ID):
        raise RunFailure(None, "the vocabulary has duplicate tokens; it is not gpt-oss's o200k_harmony")
    specials = {piece.decode("utf-8", "replace"): i for i, piece in enumerate(pieces) if i >= FIRST_SPECIAL_ID}
    return llguidance.LLTokenizer.from_tiktoken(  # type: ignore[attr-defined]  # missing from its stub
        encoder=ranks, special_tokens=specials, pattern=O200K_PATTERN, eos_token=list(END_TOKENS),
        n_vocab=len(pieces))


class MaskedSampler:
    """Samples under one llguidance grammar with the reply's Sampler (see the module docstring)."""

    def __init__(self, tok, grammar: str, sampler: Sampler) -> None:
        import llguidance

        self._matcher = llguidance.LLMatcher(tok, grammar, log_level=0)
        if self._matcher.is_error():
            raise BadInputError(None, f"unsupported JSON schema: {refusal(self._matcher.get_error())}")
        self._sampler = sampler
        self.n_vocab = sampler.n_vocab
        self._bits = np.zeros((tok.vocab_size + 31) // 32, dtype=np.int32)
        self._off = np.full(self.n_vocab, -np.inf, dtype=np.float32)

    def sample(self, ctx, idx: int) -> int:
        """The next token at output idx, allowed by the grammar; the grammar advances past it."""
        return self.choose(self._sampler.logits(ctx, idx))

    def choose(self, logits: np.ndarray) -> int:
        """A token drawn from logits under the grammar; the grammar advances past it."""
        token = self._sampler.draw(logits)
        if not self.allows(token):
            token = self._sampler.draw(self.masked(logits))
        self.advance(token)
        return token

    def allows(self, token: int) -> bool:
        """Whether the grammar, where it stands, allows this token next."""
        if token in END_TOKENS:
            return self._matcher.is_accepting()
        return token < FIRST_SPECIAL_ID and self._matcher.validate_tokens([token]) == 1

    def advance(self, token: int) -> None:
        """Move the grammar past a token it allows."""
        if token not in END_TOKENS and not self._matcher.consume_token(token):
            raise RunFailure(None, f"the schema grammar refused token {token}: {self._matcher.get_error()}")

    def masked(self, logits: np.ndarray) -> np.ndarray:
        """The logits with every token the grammar refuses at -inf; RunFailure if it allows none."""
        self._matcher.unsafe_compute_mask_ptr(self._bits.ctypes.data, self._bits.nbytes)
        allowed = np.unpackbits(self._bits.view(np.uint8), count=self.n_vocab, bitorder="little").view(bool)
        if not allowed.any():
            raise RunFailure(None, f"the schema grammar allows no token: {self._matcher.get_error() or 'dead end'}")
        return np.where(allowed, logits, self._off)

    def close(self) -> None:
        """Nothing to free by hand (kept for the sampler protocol)."""


class GrammarChains:
    """The grammar samplers of one reply, one per grammar, made when first needed. They draw with the reply's
    own Sampler (one seeded random stream for the whole reply)."""

    def __init__(self, tok: Callable[[], Any], sampler: Sampler) -> None:
        self._tok = tok
        self._sampler = sampler
        self._samplers: dict[str, MaskedSampler] = {}

    def sample(self, grammar: str, ctx, idx: int) -> int:
        """The next token at output idx under this grammar."""
        sampler = self._samplers.get(grammar)
        if sampler is None:
            sampler = self._samplers[grammar] = MaskedSampler(self._tok(), grammar, self._sampler)
        return sampler.sample(ctx, idx)

    def close(self) -> None:
        """Drop every sampler (idempotent)."""
        self._samplers.clear()
