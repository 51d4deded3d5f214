"""A chat session: the conversation, its settings, context trimming, one generated turn, transcripts."""

from __future__ import annotations

import datetime as _dt
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Protocol, Sequence

from converters.errors import BadInputError
from gptoss_cli.engine import harmony
from gptoss_cli.engine.harmony import Message
from gptoss_cli.engine.harmony_stream import StreamParser
from gptoss_cli.engine.harmony_tools import ToolCall, ToolSpec, find_call, result_message

TRANSCRIPT_FORMAT = "gptoss-chat/1"


class TokenBackend(Protocol):
    """What a session needs from the model (gptoss_cli.engine.backend.Backend provides it)."""

    n_ctx: int

    def tokenize(self, text: str) -> list[int]: ...

    def token_bytes(self, token: int) -> bytes: ...

    def generate(self, prompt: list[int], *, temperature: float, top_p: float, max_tokens: int,
                 stop: set[int]): ...


@dataclass
class Sampling:
    """Sampling settings; OpenAI recommends temperature 1.0 and top_p 1.0 for gpt-oss."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int | None = None


@dataclass
class Turn:
    """One exchange: the user's message and what the model answered."""

    user: str
    final: str = ""
    analysis: str = ""
    stop_reason: str = ""
    prompt_tokens: int = 0
    gen_tokens: int = 0
    analysis_tokens: int = 0
    steps: list = field(default_factory=list)  # tool calls and results of the turn (harmony message dicts)
    tool_calls: list = field(default_factory=list)  # what the tool runner recorded per call (for --json)


@dataclass
class TurnStats:
    """Timings and token counts of one generated turn."""

    prompt_tokens: int = 0
    gen_tokens: int = 0
    analysis_tokens: int = 0
    ttft_s: float = 0.0
    decode_tps: float = 0.0
    total_s: float = 0.0
    context_used: int = 0
    n_ctx: int = 0
    dropped_turns: int = 0
    stop_reason: str = ""


@dataclass
class Session:
    """Conversation state: turns, effort, developer instructions; earlier turns keep final answers only."""

    n_ctx: int
    effort: str = "medium"
    instructions: str = ""
    date: str = field(default_factory=lambda: _dt.date.today().isoformat())
    turns: list[Turn] = field(default_factory=list)
    tools: list[ToolSpec] = field(default_factory=list)  # function tools shown to the model
    start: int = 0  # turns before this index were dropped from the context (kept in the transcript)
    last: TurnStats | None = None
    total_prompt_tokens: int = 0
    total_gen_tokens: int = 0

    def messages(self, user: str | None = None, steps: Sequence[Message] = ()) -> list[Message]:
        """Harmony messages of the turns still in context (earlier turns keep their tool calls and results,
        not their analysis), plus an optional new user message and the steps of the turn in progress."""
        out: list[Message] = []
        for turn in self.turns[self.start:]:
            out.append(Message("user", turn.user))
            out.extend(Message(**m) for m in turn.steps if m.get("channel") != "analysis")
            if turn.final:
                out.append(Message("assistant", turn.final, "final"))
        if user is not None:
            out.append(Message("user", user))
        return out + list(steps)

    def render(self, user: str, steps: Sequence[Message] = ()) -> str:
        """The harmony prompt for the next reply to `user` (after the turn's steps so far)."""
        return harmony.render_prompt(self.messages(user, steps), effort=self.effort, date=self.date,
                                     instructions=self.instructions, tools=self.tools)

    def fit(self, user: str, tokenize: Callable[[str], list[int]], reserve: int,
            steps: Sequence[Message] = (), tokenize_plain: Callable[[str], list[int]] | None = None
            ) -> tuple[list[int], int]:
        """Prompt tokens leaving `reserve` tokens free, dropping oldest turns; returns (tokens, dropped).

        With tokenize_plain, message contents (user text, tool results, tool descriptions) are tokenized
        without special tokens, as openai-harmony does: text that spells `<|end|>` cannot end a message."""
        first = self.start
        while True:
            tokens = self._tokens(user, steps, tokenize, tokenize_plain)
            if len(tokens) + reserve <= self.n_ctx or self.start >= len(self.turns):
                break
            self.start += 1
        dropped = self.start - first
        if len(tokens) >= self.n_ctx - 1:
            self.start = first  # the message is refused; the conversation stays as it was
            raise BadInputError(None, f"the prompt is {len(tokens)} tokens, the context holds {self.n_ctx}",
                                "Shorten the message or the instructions, or raise --ctx-size")
        return tokens, dropped

    def _tokens(self, user: str, steps: Sequence[Message], tokenize: Callable[[str], list[int]],
                tokenize_plain: Callable[[str], list[int]] | None) -> list[int]:
        if tokenize_plain is None:
            return tokenize(self.render(user, steps))
        parts = harmony.prompt_parts(self.messages(user, steps), effort=self.effort, date=self.date,
                                     instructions=self.instructions, tools=self.tools)
        return harmony.tokenize_parts(parts, tokenize, tokenize_plain)

    def reset(self) -> None:
        """Forget the conversation; keep effort and instructions."""
        self.turns, self.start, self.last = [], 0, None

    def to_json(self, model: str | None = None) -> dict:
        """The transcript as a JSON-ready dict."""
        return {"format": TRANSCRIPT_FORMAT, "model": model, "date": self.date, "effort": self.effort,
                "system": self.instructions, "context_start": self.start,
                "turns": [asdict(t) for t in self.turns]}

    def save(self, path: Path, model: str | None = None) -> Path:
        """Write the transcript as JSON (via a .partial file renamed into place)."""
        path = Path(path).expanduser()
        tmp = path.with_name(path.name + ".partial")
        tmp.write_text(json.dumps(self.to_json(model), indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path

    def load(self, path: Path) -> None:
        """Replace the conversation, effort and instructions with a saved transcript's."""
        path = Path(path).expanduser()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != TRANSCRIPT_FORMAT:
                raise ValueError(f"not a {TRANSCRIPT_FORMAT} transcript")
            turns = [Turn(**t) for t in data["turns"]]
            effort = data.get("effort", self.effort)
            if effort not in harmony.EFFORTS:
                raise ValueError(f"unknown effort {effort!r}")
        except FileNotFoundError:
            raise BadInputError(path, "no such file") from None
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise BadInputError(path, f"cannot read the transcript: {exc}",
                                "Pass a file written by /save") from None
        self.turns, self.start, self.last = turns, 0, None
        self.effort, self.instructions = effort, data.get("system") or ""


@dataclass
class TurnResult:
    """A finished turn and its statistics."""

    turn: Turn
    stats: TurnStats


def reserve_for(n_ctx: int, max_tokens: int | None) -> int:
    """Tokens kept free for the reply when trimming: --max-tokens, else a quarter of the context."""
    return min(max_tokens or n_ctx // 4, n_ctx // 2)


ToolRunner = Callable[[ToolCall], str]  # runs (or declines) one call; returns the text the model gets back
ConstraintFor = Callable[[int], object]  # calls made so far in the turn -> engine.constrain.Constraint or None
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
    calls, dropped, told_limit, prompt = 0, 0, False, []
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
    decode_s = sum(g.t_last - g.t_first for g in gens if g.t_first is not None and g.n > 1)
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


def stats_rows(session: Session) -> Sequence[tuple[str, str]]:
    """Rows for /stats: the last turn and the session so far."""
    s = session.last
    rows = [("turns", f"{len(session.turns)} ({session.start} dropped from context)"),
            ("effort", session.effort)]
    if s is None:
        return rows + [("last turn", "none yet")]
    pct = 100 * s.context_used / s.n_ctx if s.n_ctx else 0
    return rows + [
        ("prompt tokens", str(s.prompt_tokens)),
        ("generated tokens", f"{s.gen_tokens} ({s.analysis_tokens} thinking)"),
        ("time to first token", f"{s.ttft_s * 1000:.0f} ms"),
        ("decode speed", f"{s.decode_tps:.1f} tokens/s"),
        ("context used", f"{s.context_used} / {s.n_ctx} ({pct:.0f}%)"),
        ("stop reason", s.stop_reason),
        ("session tokens", f"{session.total_prompt_tokens} prompt, {session.total_gen_tokens} generated"),
    ]
