"""One generated turn of a chat session: trim the context, generate, run the tool calls the model makes and
go on, then record the turn and its statistics."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from gptoss_cli.engine import harmony
from gptoss_cli.engine.harmony import Message
from gptoss_cli.engine.harmony_stream import StreamParser
from gptoss_cli.engine.harmony_tools import ToolCall, find_call, result_message
from gptoss_cli.engine.session import Sampling, Session, TokenBackend, Turn, TurnResult, TurnStats

if TYPE_CHECKING:
    from gptoss_cli.engine.constrain import Constraint


def reserve_for(n_ctx: int, max_tokens: int | None) -> int:
    """Tokens kept free for the reply when trimming: --max-tokens, else a quarter of the context."""
    return min(max_tokens or n_ctx // 4, n_ctx // 2)


ToolRunner = Callable[[ToolCall], str]  # runs (or declines) one call; returns the text the model gets back
ConstraintFor = Callable[[int], "Constraint | None"]  # calls made so far in the turn -> the constraint, if any
TOOL_LIMIT_NOTE = "error: no more tool calls in this turn (the limit is {n}); answer with what you have"


@dataclass
class _Gen:
    """One generation inside a turn."""

    parser: StreamParser
    n: int
    n_analysis: int
    t_first: float | None
    t_last: float | None
    reason: str


def run_turn(session: Session, backend: TokenBackend, user: str, sampling: Sampling,
             on_delta: Callable[[str, str], None] | None = None, *, run_tool: ToolRunner | None = None,
             max_tool_calls: int = 16, constraint_for: ConstraintFor | None = None) -> TurnResult:
    """Generate the reply to `user`, streaming (channel, text) to on_delta; Ctrl-C ends it, kept.

    A tool call goes to run_tool, its result is added as the tool's message and generation goes on (the
    turn's analysis stays in the prompt until the final answer). --max-tokens counts the whole turn.
    """
    t0 = time.perf_counter()
    reserve = reserve_for(session.n_ctx, sampling.max_tokens)
    steps: list[Message] = []
    gens: list[_Gen] = []
    calls, dropped, told_limit = 0, 0, False
    prompt: list[int] = []
    while True:
        prompt, d = session.fit(user, backend.tokenize, reserve, steps, getattr(backend, "tokenize_plain", None))
        dropped += d
        used = sum(g.n for g in gens)
        room = session.n_ctx - len(prompt)
        max_new = min(sampling.max_tokens - used, room) if sampling.max_tokens else room
        if max_new <= 0:
            reason = "length"
            break
        gen = _generate(backend, prompt, sampling, max_new, on_delta, _control(constraint_for, calls, backend))
        gens.append(gen)
        steps += [Message(m.role, m.content, m.channel, m.recipient, m.content_type)
                  for m in gen.parser.messages if m.role == "assistant"]
        reason = gen.reason
        call = find_call(gen.parser.messages) if reason == "call" else None
        if call is None or run_tool is None:
            break
        if calls >= max_tool_calls:
            if told_limit:
                reason = "tool_limit"
                break
            text, told_limit = TOOL_LIMIT_NOTE.format(n=max_tool_calls), True
        else:
            calls += 1
            try:
                text = run_tool(call)
            except KeyboardInterrupt:
                steps.append(result_message(call.name, "error: the user cancelled this call"))
                reason = "interrupted"
                break
        steps.append(result_message(call.name, text))
    return _finish_turn(session, user, steps, gens, prompt, reason, dropped, t0)


def _control(constraint_for: ConstraintFor | None, calls: int, backend: TokenBackend):
    """The constrain.Controller for the next generation, or None when nothing is forced."""
    constraint = constraint_for(calls) if constraint_for is not None else None
    if constraint is None or not constraint.active:
        return None
    from gptoss_cli.engine.constrain import Controller

    return Controller(constraint, backend.tokenize, backend.token_bytes)


def _generate(backend: TokenBackend, prompt: list[int], sampling: Sampling, max_new: int,
              on_delta: Callable[[str, str], None] | None, control) -> _Gen:
    parser = StreamParser(backend.token_bytes)
    n = n_analysis = 0
    t_first = t_last = None
    reason = ""
    extra = {"control": control} if control is not None else {}
    gen = backend.generate(prompt, temperature=sampling.temperature, top_p=sampling.top_p,
                           max_tokens=max_new, stop=set(harmony.STOP_IDS), **extra)
    try:
        for token in gen:
            t_last = time.perf_counter()
            if t_first is None:
                t_first = t_last
            n += 1
            if parser.channel == "analysis":  # thinking text and its closing <|end|>
                n_analysis += 1
            delta = parser.feed(token)
            if delta and on_delta:
                on_delta(*delta)
            if parser.done:
                break
    except KeyboardInterrupt:
        reason = "interrupted"
    finally:
        gen.close()
    tail = parser.finish()
    if tail and on_delta and reason != "interrupted":
        on_delta(*tail)
    reason = reason or parser.stop_reason or ("length" if n >= max_new else "eos")
    return _Gen(parser, n, n_analysis, t_first, t_last, reason)


def _finish_turn(session: Session, user: str, steps: list[Message], gens: list[_Gen], prompt: list[int],
                 reason: str, dropped: int, t0: float) -> TurnResult:
    final = "\n\n".join(m.content for m in steps if m.role == "assistant" and m.channel == "final")
    analysis = "\n\n".join(m.content for m in steps if m.role == "assistant" and m.channel == "analysis")
    kept = [asdict(m) for m in steps if m.channel not in ("analysis", "final")]
    n = sum(g.n for g in gens)
    n_analysis = sum(g.n_analysis for g in gens)
    firsts = [g.t_first for g in gens if g.t_first is not None]
    decode_s = sum(g.t_last - g.t_first for g in gens if g.t_first is not None and g.t_last is not None and g.n > 1)
    decode_n = sum(g.n - 1 for g in gens if g.t_first is not None and g.n > 1)
    last_n = gens[-1].n if gens else 0
    turn = Turn(user, final, analysis, reason, len(prompt), n, n_analysis, kept)
    stats = TurnStats(len(prompt), n, n_analysis, (firsts[0] if firsts else time.perf_counter()) - t0,
                      decode_n / decode_s if decode_s > 0 else 0.0, time.perf_counter() - t0,
                      len(prompt) + last_n, session.n_ctx, dropped, reason)
    session.turns.append(turn)
    session.last = stats
    session.total_prompt_tokens += len(prompt)
    session.total_gen_tokens += n
    return TurnResult(turn, stats)
