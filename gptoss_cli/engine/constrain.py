"""Constrained generation for gpt-oss: JSON-schema answers, forced tool calls, a thinking budget.

A `Controller` follows one reply token by token. The decode loop (chat's `Backend.generate`, serve's
`BatchEngine`) asks it three things:

    forced = ctl.begin()                     # tokens to emit first, not sampled
    each step:
        if forced:
            token = forced.pop(0)
        else:
            drawn = chains.sample(ctl.grammar, ctx, i) if ctl.grammar_active else sampler.sample(ctx, i)
            token = ctl.choose(drawn)        # a control token that breaks the shape becomes the closing one
        forced += ctl.commit(token)          # record it; tokens that must follow it
        emit token (it goes to the model and to the harmony parser like any sampled one)

`chains` is an engine/structured.py GrammarChains: JSON answers, call arguments and the call's name (for
tool_choice "required" among several tools) are sampled under llguidance grammars, which hold every token
to the JSON schema. Forced structure is written as harmony tokens: the analysis is ended with `<|end|>` and
the answer opened with `<|start|>assistant<|channel|>final<|message|>` (or a call header `...commentary
to=functions.NAME <|constrain|>json<|message|>`), and closed with `<|return|>` / `<|call|>`. The analysis
is never constrained.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gptoss_cli.engine.harmony import CALL, FIRST_SPECIAL_ID, RETURN, SPECIAL_IDS
from gptoss_cli.engine.harmony_stream import StreamParser
from gptoss_cli.engine.structured import compile_schema, names_grammar

END, START = SPECIAL_IDS["<|end|>"], SPECIAL_IDS["<|start|>"]
ANALYSIS_HEADER = "<|channel|>analysis<|message|>"
FINAL_HEADER = "<|channel|>final<|message|>"


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
        self._grammars = {name: compile_schema(schema) for name, schema in tools.items()}   # fail early
        self._answer = compile_schema(constraint.schema) if constraint.schema is not None else None
        self._names = names_grammar(sorted(tools)) if tools and self.tool is None else None
        self._name_text = b""
        self._token_bytes = token_bytes
        self._pending: list[int] = []
        self._end_token = CALL if tools else RETURN
        self._phase = "free"   # free | analysis | name | grammar | done

    @property
    def grammar(self) -> str | None:
        """The grammar of what is sampled now (the answer, the call's name, its arguments); None when free."""
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
    def answer_constrained(self) -> bool:
        """Whether a final answer is held to a JSON schema (it ends only where its grammar ends it)."""
        return self._answer is not None

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
