"""One request's generation as asyncio sees it: typed events from the engine thread, in order.

The harmony parser runs on the engine thread (one per request); what reaches the event loop is already
split into reasoning text, answer text and the tool call's arguments (streamed as they are generated), so
no channel token can leak into content.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass, field

from gptoss_cli.engine.batch import BatchEngine
from gptoss_cli.engine.constrain import Controller
from gptoss_cli.engine.harmony_stream import ParsedMessage, StreamParser, is_call
from gptoss_cli.engine.harmony_tools import ToolCall, call_name, find_call
from gptoss_cli.engine.jobs import Job

FAILED = ("cancelled", "shutdown", "error")   # finish reasons of a generation that gave no answer


@dataclass
class Event:
    """kind: "reasoning" | "content" | "call" | "end"; text for the first three (a call's: argument text, with
    the tool's name), reason for "end"."""

    kind: str
    text: str = ""
    reason: str = ""
    name: str = ""


@dataclass
class Outcome:
    """Everything a finished generation produced."""

    reasoning: str = ""
    content: str = ""
    call: ToolCall | None = None
    finish_reason: str = "stop"          # stop | length | tool_calls | cancelled | shutdown | error
    error: str = ""
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    reused_tokens: int = 0
    ttft_s: float = 0.0
    messages: list[ParsedMessage] = field(default_factory=list)


class StopText:
    """Cuts the answer where the first stop string to complete begins; holds back text that may begin one.
    Each character goes once through each stop's Knuth-Morris-Pratt automaton: time linear in the text."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in dict.fromkeys(stops) if s]
        self._fail = [_failure(s) for s in self.stops]
        self._state = [0] * len(self.stops)    # per stop: the longest prefix of it the text ends with
        self._held = ""
        self.hit = False

    def feed(self, text: str) -> str:
        """Text safe to emit now."""
        if not self.stops or self.hit:
            return "" if self.hit else text
        buf, base = self._held + text, len(self._held)
        for i, ch in enumerate(text):
            done = 0   # the longest stop that ends here: it begins first
            for j, stop in enumerate(self.stops):
                k, fail = self._state[j], self._fail[j]
                while k and stop[k] != ch:
                    k = fail[k - 1]
                k += stop[k] == ch
                self._state[j] = k
                if k == len(stop):
                    done = max(done, k)
            if done:
                self.hit, self._held = True, ""
                return buf[:base + i + 1 - done]
        keep = max(self._state)
        self._held = buf[len(buf) - keep:] if keep else ""
        return buf[:len(buf) - keep]

    def flush(self) -> str:
        """What was held back, once generation ended without a stop string."""
        held, self._held = self._held, ""
        return "" if self.hit else held


def _failure(s: str) -> list[int]:
    """KMP's table: for each prefix s[:i+1], the length of its longest proper prefix that is also a suffix."""
    fail, k = [0] * len(s), 0
    for i in range(1, len(s)):
        while k and s[i] != s[k]:
            k = fail[k - 1]
        k += s[i] == s[k]
        fail[i] = k
    return fail


class Generation:
    """Submits one job to the engine and hands its events to the event loop."""

    def __init__(self, engine: BatchEngine, prompt: list[int], *, max_tokens: int, temperature: float,
                 top_p: float, seed: int | None, control: Controller | None, stop: list[str]) -> None:
        self.loop = asyncio.get_running_loop()
        self._pending: list[Event] = []           # filled by the engine thread, drained by the event loop
        self._lock = threading.Lock()
        self._woken = False                       # a wake-up is scheduled and has not been drained yet
        self._ready = asyncio.Event()
        self._placed = asyncio.Event()            # set once it has a slot, or has ended
        self.started = False                      # it got a slot (engine thread writes, loop reads after _placed)
        self.engine = engine
        self.parser = StreamParser(engine.backend.token_bytes)
        # Stop strings do not cut a schema-constrained answer: cut, it would not be the complete JSON promised.
        self.stop = StopText([] if control is not None and control.answer_constrained else stop)
        self.out = Outcome(prompt_tokens=len(prompt))
        self.job = Job(prompt, max_tokens, self._on_token, self._on_end, temperature=temperature, top_p=top_p,
                       seed=seed, control=control, on_start=self._on_start)

    def start(self) -> None:
        """Queue the job (ContextFull / QueueFull propagate)."""
        self.engine.submit(self.job)

    def cancel(self) -> None:
        """Stop it at the next step; the slot is freed."""
        self.engine.cancel(self.job)

    async def placed(self) -> bool:
        """Wait until the job has a slot (True) or ended while waiting for one (False: see out.finish_reason)."""
        await self._placed.wait()
        return self.started

    async def events(self):
        """Reasoning and content events, then one "end" event. Text the loop had not taken yet when more
        came is merged into one event (a busy loop sends fewer, longer deltas instead of falling behind)."""
        while True:
            await self._ready.wait()
            with self._lock:
                pending, self._pending, self._woken = self._pending, [], False
                self._ready.clear()
            for event in _merged(pending):
                yield event
                if event.kind == "end":
                    return

    # --- engine thread ----------------------------------------------------------------------------

    def _emit(self, kind: str, text: str = "", reason: str = "", name: str = "") -> None:
        with self._lock:
            self._pending.append(Event(kind, text, reason, name))
            wake, self._woken = not self._woken, True
        if wake:   # one wake-up per batch of events: each costs the loop a syscall and a turn
            self.loop.call_soon_threadsafe(self._ready.set)

    def _on_start(self) -> None:
        self.started = True
        self.loop.call_soon_threadsafe(self._placed.set)

    def _on_token(self, token: int) -> bool:
        self.out.completion_tokens += 1
        if self.parser.channel == "analysis" and not is_call(self.parser.current):
            self.out.reasoning_tokens += 1
        delta = self.parser.feed(token)
        if delta:
            self._route(delta[0], delta[1])
        return not self.parser.done and not self.stop.hit

    def _route(self, channel: str, text: str) -> None:
        msg = self.parser.current or (self.parser.messages[-1] if self.parser.messages else None)
        if msg is not None and msg.recipient is not None and is_call(msg):
            self._emit("call", text, name=call_name(msg.recipient))
        elif channel == "analysis":
            self.out.reasoning += text
            self._emit("reasoning", text)
        elif channel == "final":
            text = self.stop.feed(text)
            if text:
                self.out.content += text
                self._emit("content", text)

    def _on_end(self, reason: str) -> None:
        tail = self.parser.finish()
        if tail and reason not in ("cancelled", "shutdown"):
            self._route(*tail)
        held = self.stop.flush()
        if held:
            self.out.content += held
            self._emit("content", held)
        out, job = self.out, self.job
        out.messages = list(self.parser.messages)
        out.call = find_call(out.messages)
        out.reused_tokens = job.reused_tokens
        out.ttft_s = (job.t_first - job.t_submit) if job.t_first else 0.0
        if reason.startswith("error"):
            out.finish_reason, out.error = "error", reason.split(":", 1)[-1].strip()
        elif reason in ("cancelled", "shutdown", "length"):
            out.finish_reason = reason
        else:
            out.finish_reason = "tool_calls" if out.call is not None else "stop"
        self._emit("end", reason=out.finish_reason)
        self.loop.call_soon_threadsafe(self._placed.set)


def _merged(events: list[Event]) -> list[Event]:
    out: list[Event] = []
    for event in events:
        if out and event.kind == out[-1].kind and event.kind != "end":
            out[-1] = Event(event.kind, out[-1].text + event.text, name=out[-1].name)
        else:
            out.append(event)
    return out


def now() -> int:
    """Unix time in seconds (the `created` field)."""
    return int(time.time())
