"""A chat session: the conversation, its settings, context trimming, transcripts (a turn: engine/turn.py)."""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from converters.errors import BadInputError
from gptoss_cli.engine import harmony
from gptoss_cli.engine.harmony import Message
from gptoss_cli.engine.harmony_tools import ToolSpec

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
