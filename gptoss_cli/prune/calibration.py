"""Calibration text for expert statistics: files the user passes, or the set the package ships, in harmony.

A file is plain text (used as it is) or JSONL, one conversation per line in the OpenAI chat layout:
`{"messages": [{"role": "system"|"developer"|"user"|"assistant"|"tool", "content": ...}], "tools": [...]}`.
An assistant message may carry its reasoning (`thinking`, `reasoning_content` or `reasoning`: the analysis
channel) and `tool_calls`; a tool message names its function (`name`, or the `tool_call_id` of the call).
ShareGPT lines (`{"conversations": [{"from": "human"|"gpt"|"system", "value": ...}]}`) are read too.
Conversations are rendered as gpt-oss reads them (engine/harmony.py), every turn's analysis kept.

The shipped set (data/calibration.jsonl, written for this project) holds prompts across chat, code, maths,
tool calls, reasoning and a dozen languages; `generate_texts` adds the model's own replies to them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from converters.errors import BadInputError
from gptoss_cli.engine import harmony
from gptoss_cli.engine.harmony import Message
from gptoss_cli.engine.harmony_tools import ToolSpec, call_message, result_message

BUILTIN = Path(__file__).resolve().parent / "data" / "calibration.jsonl"
THINKING_KEYS = ("thinking", "reasoning_content", "reasoning")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "system": "system"}


@dataclass
class Conversation:
    """One calibration conversation: developer instructions, function tools, harmony messages."""

    messages: list[Message]
    instructions: str = ""
    tools: list[ToolSpec] = field(default_factory=list)
    effort: str | None = None
    category: str = ""

    @property
    def wants_reply(self) -> bool:
        """Whether the model's turn comes next (the last message is not an assistant's answer)."""
        return not self.messages or self.messages[-1].role != "assistant" or self.messages[-1].channel != "final"


def builtin_conversations() -> list[Conversation]:
    """The shipped calibration set, in an order where any prefix covers every category."""
    return _read_jsonl(BUILTIN)


def builtin_texts(effort: str = "medium") -> list[str]:
    """The shipped calibration set rendered in harmony, without the model's replies."""
    return [render(c, effort) for c in builtin_conversations()]


def load_texts(paths: list[Path], effort: str = "medium") -> list[str]:
    """Calibration texts from files: plain text as it is, JSONL chat conversations rendered in harmony (at
    `effort` where a conversation names none)."""
    texts: list[str] = []
    for path in map(Path, paths):
        if not path.is_file():
            raise BadInputError(path, "no such file", "Pass a plain-text or JSONL file to --text")
        if _is_jsonl(path):
            texts += [render(c, effort) for c in _read_jsonl(path)]
        else:
            texts.append(_read(path))
    return texts


def render(conv: Conversation, effort: str = "medium") -> str:
    """A whole conversation in harmony: system, developer (instructions, tools), every message."""
    parts = harmony.prompt_parts([], effort=conv.effort or effort, instructions=conv.instructions,
                                 tools=conv.tools)[:-1]   # less the closing `<|start|>assistant`
    text = "".join(t for t, _ in parts)
    return text + "".join(harmony.render_message(m) for m in conv.messages)


@dataclass
class Generated:
    """Calibration texts with the model's replies, and what producing them took."""

    texts: list[str]
    tokens: int = 0          # tokens the texts hold, as the statistics tokenize them
    reply_tokens: int = 0    # tokens the model generated
    effort: str = "medium"
    seconds: float = 0.0     # wall time of the replies, prompts included
    decode_tokens: int = 0   # reply tokens after each reply's first, as `gptoss chat` counts its decode speed
    decode_seconds: float = 0.0

    def timings(self) -> dict:
        """Reply tokens, seconds, and the decode speed measured as `gptoss chat --json` measures it."""
        decode = self.decode_tokens / self.decode_seconds if self.decode_seconds else 0.0
        return {"reply_tokens": self.reply_tokens, "seconds": round(self.seconds, 3),
                "decode_tokens_per_s": round(decode, 3),
                "reply_tokens_per_s": round(self.reply_tokens / self.seconds, 3) if self.seconds else 0.0}

    def label(self) -> str:
        """What the calibration text was, for the progress line, the statistics file and --json."""
        n = len(self.texts)
        return (f"built-in set: {n} conversation{'' if n == 1 else 's'}, {self.reply_tokens} reply tokens the "
                f"model generated at effort {self.effort}")


def generate_texts(backend, conversations: list[Conversation] | None = None, *, effort: str = "medium",
                   max_tokens: int = 1024, budget_tokens: int | None = None, temperature: float = 1.0,
                   progress: Callable[[int, int], None] | None = None) -> list[str]:
    """Each conversation (default: the shipped set) and the model's own reply at `effort`, in harmony."""
    return generate(backend, conversations, effort=effort, max_tokens=max_tokens, budget_tokens=budget_tokens,
                    temperature=temperature, progress=progress).texts


def generate(backend, conversations: list[Conversation] | None = None, *, effort: str = "medium",
             max_tokens: int = 1024, budget_tokens: int | None = None, temperature: float = 1.0,
             progress: Callable[[int, int], None] | None = None) -> Generated:
    """generate_texts with its counts. A reply ends at the model's stop, a tool call, max_tokens, or where the
    texts reach budget_tokens tokens; no conversation starts past the budget.

    `backend` is an engine.backend.Backend (or anything with its tokenize/tokenize_plain/token_bytes/generate
    and n_ctx). progress(tokens so far, budget_tokens) after each conversation; without a budget,
    progress(conversations done, conversations in all).
    """
    convs = builtin_conversations() if conversations is None else conversations
    out = Generated([], effort=effort)
    started = time.perf_counter()
    for i, conv in enumerate(convs):
        left = None if budget_tokens is None else budget_tokens - out.tokens
        if left is not None and left <= 0:
            break
        if not conv.wants_reply:
            text = render(conv, effort)
        else:
            parts = harmony.prompt_parts(conv.messages, effort=conv.effort or effort,
                                         instructions=conv.instructions, tools=conv.tools)
            prompt = harmony.tokenize_parts(parts, backend.tokenize, backend.tokenize_plain)
            room = min(max_tokens, backend.n_ctx - len(prompt) - 1, max_tokens if left is None else left - len(prompt))
            reply, n = _reply(backend, prompt, room, temperature, out)
            out.reply_tokens += n
            text = "".join(t for t, _ in parts) + reply.decode("utf-8", errors="replace")
        out.texts.append(text)
        out.tokens += len(backend.tokenize(text))    # as collect_stats tokenizes it (a reply may re-encode shorter)
        out.seconds = time.perf_counter() - started
        if progress:
            progress(*((min(out.tokens, budget_tokens), budget_tokens) if budget_tokens else (i + 1, len(convs))))
    return out


def _reply(backend, prompt: list[int], room: int, temperature: float, out: Generated) -> tuple[bytes, int]:
    """The model's reply to prompt (at most room tokens, up to its stop or a tool call): bytes, tokens.
    Adds the time from its first token to its last to out's decode timing."""
    from gptoss_cli.engine.harmony_stream import StreamParser

    reply, n = bytearray(), 0
    if room <= 0:
        return bytes(reply), 0
    parser = StreamParser(backend.token_bytes)
    gen = backend.generate(prompt, temperature=temperature, top_p=1.0, max_tokens=room, stop=set(harmony.STOP_IDS))
    t_first = t_last = 0.0
    try:
        for token in gen:
            t_last = time.perf_counter()
            t_first = t_first or t_last
            reply += backend.token_bytes(token)
            n += 1
            parser.feed(token)
            if parser.done:
                break
    finally:
        gen.close()
    if n > 1:
        out.decode_tokens += n - 1
        out.decode_seconds += t_last - t_first
    return bytes(reply), n


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise BadInputError(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})",
                            "Pass a UTF-8 text or JSONL file") from None
    except OSError as exc:
        raise BadInputError(path, f"cannot read it: {exc.strerror or exc}") from None


def _is_jsonl(path: Path) -> bool:
    if path.suffix.lower() == ".jsonl":
        return True
    first = next((line for line in _read(path).splitlines() if line.strip()), "")
    try:
        doc = json.loads(first)
    except ValueError:
        return False
    return isinstance(doc, dict) and ("messages" in doc or "conversations" in doc)


def _read_jsonl(path: Path) -> list[Conversation]:
    out = []
    for n, line in enumerate(_read(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            out.append(parse_conversation(json.loads(line)))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise BadInputError(f"{path}:{n}", f"not a chat conversation ({exc})",
                                'Each line must be {"messages": [{"role": ..., "content": ...}, ...]}') from None
    if not out:
        raise BadInputError(path, "no conversations in it", "Pass a JSONL file with one conversation per line")
    return out


def parse_conversation(doc: dict | list) -> Conversation:
    """One JSONL record (OpenAI chat or ShareGPT layout, see the module docstring) as a Conversation."""
    if isinstance(doc, list):
        doc = {"messages": doc}
    if "conversations" in doc:
        msgs = [{"role": SHAREGPT_ROLES[m["from"]], "content": m["value"]} for m in doc["conversations"]]
    else:
        msgs = doc["messages"]
    if not isinstance(msgs, list) or not msgs:
        raise ValueError("no messages")
    conv = Conversation([], tools=[_tool(t) for t in doc.get("tools") or []],
                        effort=doc.get("reasoning_effort") or doc.get("effort"), category=doc.get("category", ""))
    if conv.effort not in (None, *harmony.EFFORTS):
        raise ValueError(f"reasoning effort {conv.effort!r} is not one of {', '.join(harmony.EFFORTS)}")
    calls: dict[str, str] = {}
    for m in msgs:
        _add_message(conv, m, calls)
    return conv


def _add_message(conv: Conversation, m: dict, calls: dict[str, str]) -> None:
    role, content = m["role"], _content(m.get("content"))
    if role in ("system", "developer"):
        conv.instructions = "\n\n".join(filter(None, [conv.instructions, content]))
    elif role == "user":
        conv.messages.append(Message("user", content))
    elif role == "assistant":
        thinking = next((m[k] for k in THINKING_KEYS if m.get(k)), "")
        if thinking:
            conv.messages.append(Message("assistant", _content(thinking), "analysis"))
        tool_calls = m.get("tool_calls") or []
        if content:
            conv.messages.append(Message("assistant", content, "commentary" if tool_calls else "final"))
        for call in tool_calls:
            fn = call.get("function", call)
            args = fn.get("arguments", "{}")
            conv.messages.append(call_message(fn["name"], args if isinstance(args, str) else json.dumps(args)))
            if call.get("id"):
                calls[call["id"]] = fn["name"]
    elif role == "tool":
        name = m.get("name") or calls.get(m.get("tool_call_id", ""))
        if not name:
            raise ValueError("a tool message names no function (give 'name' or the 'tool_call_id' of a call)")
        conv.messages.append(result_message(name, content))
    else:
        raise ValueError(f"unknown role {role!r}")


def _content(value) -> str:
    """Message content: a string, or a list of parts of which the text ones count."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return "".join(p if isinstance(p, str) else p.get("text", "") for p in value)
    raise ValueError(f"content of type {type(value).__name__}")


def _tool(t: dict) -> ToolSpec:
    fn = t.get("function", t)
    return ToolSpec(fn["name"], fn.get("description", ""), fn.get("parameters"))
