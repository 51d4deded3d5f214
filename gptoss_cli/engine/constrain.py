"""Constrained generation for gpt-oss: JSON-schema answers, forced tool calls, a thinking budget.

A `Controller` follows one reply token by token. The decode loop (chat's `Backend.generate`, serve's
`BatchEngine`) asks it three things:

    queue = ctl.begin()                      # tokens to emit first (forced, not sampled)
    each step:
        token = queue.pop(0) if queue else ctl.choose(chains.sample(ctl.grammar, ctx, i) if ctl.grammar_active
                                                      else sample(chain))
        queue += ctl.commit(token)           # record it; forced tokens that must follow
        emit token (it goes to the model and to the harmony parser like any sampled one)

Forced structure is written as harmony tokens: the analysis is ended with `<|end|>` and the answer opened
with `<|start|>assistant<|channel|>final<|message|>` (or a call header `...commentary to=functions.NAME
<|constrain|>json<|message|>`); the answer or the call's arguments are sampled under a llama.cpp grammar
built from the JSON schema by llama-cpp-python's converter, and closed with `<|return|>` / `<|call|>`.
The analysis is never constrained.
"""

from __future__ import annotations

import ctypes
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from converters.errors import BadInputError
from gptoss_cli.engine.harmony import CALL, FIRST_SPECIAL_ID, RETURN, SPECIAL_IDS, STOP_IDS
from gptoss_cli.engine.harmony_stream import StreamParser
from gptoss_cli.engine.sampling import Sampler

END, START = SPECIAL_IDS["<|end|>"], SPECIAL_IDS["<|start|>"]
ANALYSIS_HEADER = "<|channel|>analysis<|message|>"
FINAL_HEADER = "<|channel|>final<|message|>"
LAST_SPECIAL_ID = 201087  # o200k_harmony's last reserved id


def call_header(name: str) -> str:
    """The header of a tool call as gpt-oss writes it (after `<|start|>assistant`)."""
    return f"<|channel|>commentary to=functions.{name} <|constrain|>json<|message|>"


@dataclass(frozen=True)
class Constraint:
    """What to force on one reply. Any field left None is left to the model.

    schema: the final answer is JSON valid for it (`{"type": "object"}` for any object).
    tool / tool_schema: the reply is a call of that function with arguments valid for tool_schema.
    tools: the reply is a call of one of these functions (name -> parameters schema); the name is sampled.
    thinking_budget: at most this many analysis tokens; then the answer (or the call) is opened.
    """

    schema: dict | None = None
    tool: str | None = None
    tool_schema: dict | None = None
    tools: dict[str, dict | None] | None = None
    thinking_budget: int | None = None

    @property
    def active(self) -> bool:
        """Whether there is anything to force."""
        return self.target or self.thinking_budget is not None

    @property
    def target(self) -> bool:
        """Whether the reply must be a JSON answer or a call."""
        return self.schema is not None or self.tool is not None or bool(self.tools)


_LOOSE_CHAR = 'char ::= [^"\\\\] |'
_JSON_CHAR = 'char ::= [^"\\\\\\x7F\\x00-\\x1F] |'


def names_grammar(names: list[str]) -> str:
    """GBNF that matches exactly one of the names."""
    return "root ::= " + " | ".join(json.dumps(n) for n in names) + "\n"


def grammar_for(schema: dict | bool | None) -> str:
    """GBNF (llama.cpp grammar) text for a JSON schema; BadInputError if the converter rejects it."""
    if schema is None or schema is True or schema == {}:
        schema = {"type": "object"}
    try:
        text = json.dumps(schema, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise BadInputError(None, f"the JSON schema cannot be serialised: {exc}") from None
    return _gbnf(text)


@lru_cache(maxsize=64)
def _gbnf(schema_json: str) -> str:
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        gbnf = json_schema_to_gbnf(schema_json)
    except Exception as exc:  # noqa: BLE001 - the converter raises bare exceptions on unsupported schemas
        raise BadInputError(None, f"unsupported JSON schema: {exc}",
                            "Use plain types, properties, required, enum, arrays and string lengths") from None
    # llama-cpp-python's converter lets raw control characters (a newline, a tab) into strings, which JSON
    # forbids; llama.cpp's own converter (common/json-schema-to-grammar.cpp) excludes them. Same rule here.
    return gbnf.replace(_LOOSE_CHAR, _JSON_CHAR)


class Controller:
    """Follows one reply and forces the structure a Constraint asks for (see the module docstring)."""

    def __init__(self, constraint: Constraint, tokenize: Callable[[str], list[int]],
                 token_bytes: Callable[[int], bytes]) -> None:
        self.c = constraint
        self._tokenize = tokenize
        self.parser = StreamParser(token_bytes)   # tracks the channel of every committed token
        self.analysis_tokens = 0
        self.target = constraint.target
        self.tool = constraint.tool
        if not self.tool and constraint.tools and len(constraint.tools) == 1:
            self.tool = next(iter(constraint.tools))
        tools = dict(constraint.tools or {})
        if constraint.tool is not None:
            tools[constraint.tool] = constraint.tool_schema
        self._grammars = {name: grammar_for(schema) for name, schema in tools.items()}   # fail early
        self._answer = grammar_for(constraint.schema) if constraint.schema is not None else None
        self._names = names_grammar(sorted(tools)) if tools and self.tool is None else None
        self._name_text = b""
        self._token_bytes = token_bytes
        self._pending: list[int] = []
        self._end_token = CALL if tools else RETURN
        self._phase = "free"   # free | analysis | name | grammar | done

    @property
    def grammar(self) -> str | None:
        """GBNF of what is sampled now (the answer, the call's name, its arguments); None when free."""
        if self._phase == "name":
            return self._names
        if self._phase == "grammar":
            return self._grammars[self.tool] if self.tool is not None else self._answer
        return None

    @property
    def grammar_active(self) -> bool:
        """Sample the next token with the grammar chain."""
        return self._phase in ("grammar", "name")

    @property
    def finished(self) -> bool:
        """The forced answer or call has been closed."""
        return self._phase == "done"

    def begin(self) -> list[int]:
        """Tokens to force right after the prompt (which ends with `<|start|>assistant`)."""
        if self.c.thinking_budget is not None and self.c.thinking_budget <= 0:
            return self._answer_header()
        if self.target:
            self._phase = "analysis"
            return self._tokenize(ANALYSIS_HEADER)
        return []

    def choose(self, sampled: int) -> int:
        """The token to commit for a sampled one: control tokens where they break the forced shape are
        replaced by the one that closes the current part."""
        if self._phase == "name":
            if sampled < FIRST_SPECIAL_ID:
                self._name_text += self._token_bytes(sampled)
                return sampled
            self.tool = self._name_text.decode("utf-8", "replace")   # the name grammar is complete
            self._phase = "grammar"
            first, *self._pending = self._tokenize(" <|constrain|>json<|message|>")
            return first
        if sampled < FIRST_SPECIAL_ID:
            return sampled
        if self._phase == "grammar":
            return self._end_token
        if self._phase == "analysis" and self.parser.channel == "analysis":
            return END
        return sampled

    def commit(self, token: int) -> list[int]:
        """Record a committed token (sampled or forced); returns tokens that must be forced next."""
        in_analysis = self.parser.channel == "analysis"
        self.parser.feed(token)
        if self._pending:
            pending, self._pending = self._pending, []
            return pending
        if self._phase in ("grammar", "name"):
            if token in (RETURN, CALL):
                self._phase = "done"
            return []
        if self._phase == "done" or not in_analysis:
            return []
        if token >= FIRST_SPECIAL_ID:   # the analysis message is over
            if token == END and (self.target or self._over_budget()):
                return [START] + self._tokenize("assistant") + self._answer_header()
            return []
        self.analysis_tokens += 1
        return [END] if self._over_budget() else []

    def _over_budget(self) -> bool:
        return self.c.thinking_budget is not None and self.analysis_tokens >= self.c.thinking_budget

    def _answer_header(self) -> list[int]:
        if self.tool is not None:
            self._phase = "grammar"
            return self._tokenize(call_header(self.tool))
        if self._names is not None:
            self._phase = "name"
            return self._tokenize("<|channel|>commentary to=functions.")
        self._phase = "grammar" if self.c.schema is not None else "done"
        return self._tokenize(FINAL_HEADER)


def sampler_chain(vocab, *, temperature: float, top_p: float, seed: int | None):
    """A llama.cpp sampler chain (top_p, temperature, seeded draw; greedy at temperature 0); the caller frees
    it with llama_sampler_free."""
    import llama_cpp as lc

    chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
    if temperature <= 0:
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_greedy())
        return chain
    if top_p < 1.0:
        lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_p(top_p, 1))
    lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_temp(temperature))
    use_seed = lc.LLAMA_DEFAULT_SEED if seed is None or seed < 0 else seed
    lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_dist(ctypes.c_uint32(use_seed).value))
    return chain


class GrammarSampler:
    """Samples under one grammar as llama.cpp's common sampler does: draw from the free distribution, check
    that one token against the grammar, and only when it is refused filter the whole vocabulary (the grammar
    check of every token costs ~10x a decode step of a small model). Control tokens other than the stop
    tokens are never allowed."""

    def __init__(self, vocab, grammar: str, sampler: Sampler) -> None:
        import llama_cpp as lc
        import numpy as np

        self._lc, self._sampler = lc, sampler
        self._grammar = lc.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
        if not self._grammar:
            raise BadInputError(None, "llama.cpp could not parse the grammar built from the JSON schema")
        self.n_vocab = lc.llama_vocab_n_tokens(vocab)
        self._one = (lc.llama_token_data * 1)()
        self._one_arr = lc.llama_token_data_array(self._one, 1, -1, False)
        self._all = np.zeros(self.n_vocab, dtype=[("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
        self._ids = np.arange(self.n_vocab, dtype=np.int32)
        self._banned = np.array([t for t in range(FIRST_SPECIAL_ID, min(LAST_SPECIAL_ID + 1, self.n_vocab))
                                 if t not in STOP_IDS], dtype=np.int64)

    def sample(self, ctx, idx: int) -> int:
        """The next token at output idx, valid for the grammar; the grammar advances past it."""
        logits = self._sampler.logits(ctx, idx)
        token = self._sampler.draw(logits)
        if (token < FIRST_SPECIAL_ID or token in STOP_IDS) and self.allows(token):
            self.advance(token)
            return token
        return self._resample(logits)

    def advance(self, token: int) -> None:
        """Move the grammar past a token it allows."""
        self._lc.llama_sampler_accept(self._grammar, token)

    def allows(self, token: int) -> bool:
        """Whether the grammar, where it stands, allows this token next."""
        one = self._one[0]
        one.id, one.logit, one.p = token, 0.0, 0.0  # type: ignore[assignment]  # llama_cpp types id as c_int32
        self._one_arr.size, self._one_arr.selected, self._one_arr.sorted = 1, -1, False
        self._lc.llama_sampler_apply(self._grammar, ctypes.byref(self._one_arr))
        return self._one[0].logit != float("-inf")

    def _resample(self, logits) -> int:
        import numpy as np

        lc, cand = self._lc, self._all
        cand["id"] = self._ids   # llama.cpp's grammar may reorder nothing, but it reads ids from here
        cand["logit"] = logits
        cand["logit"][self._banned] = -np.inf
        arr = lc.llama_token_data_array(cand.ctypes.data_as(lc.llama_token_data_p), self.n_vocab, -1, False)
        lc.llama_sampler_apply(self._grammar, ctypes.byref(arr))
        token = int(cand["id"][self._sampler.draw(cand["logit"])])
        self.advance(token)
        return token

    def close(self) -> None:
        """Free the grammar (idempotent)."""
        if self._grammar:
            self._lc.llama_sampler_free(self._grammar)
        self._grammar = None


class GrammarChains:
    """The grammar samplers of one reply, one per grammar text, made when first needed; close() frees them.
    They draw with the reply's own Sampler (one seeded random stream for the whole reply)."""

    def __init__(self, vocab, sampler: Sampler) -> None:
        self._vocab = vocab
        self._sampler = sampler
        self._samplers: dict[str, GrammarSampler] = {}

    def sample(self, grammar: str, ctx, idx: int) -> int:
        """The next token at output idx under this grammar."""
        sampler = self._samplers.get(grammar)
        if sampler is None:
            sampler = self._samplers[grammar] = GrammarSampler(self._vocab, grammar, self._sampler)
        return sampler.sample(ctx, idx)

    def close(self) -> None:
        """Free every sampler (idempotent)."""
        for sampler in self._samplers.values():
            sampler.close()
        self._samplers.clear()
