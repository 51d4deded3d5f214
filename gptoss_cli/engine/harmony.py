"""The harmony chat format of gpt-oss: render prompts as text and tokens.

Rendering follows openai-harmony's `render_conversation_for_completion` byte for byte; the text is
tokenized by the model's own tokenizer with special tokens parsed. Generated tokens are read back into
messages by engine/harmony_stream.py.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

IDENTITY = "You are ChatGPT, a large language model trained by OpenAI."
KNOWLEDGE_CUTOFF = "2024-06"
EFFORTS = ("low", "medium", "high")
CHANNELS = ("analysis", "commentary", "final")

# o200k_harmony: ids 199998..201087 are special; these are the named ones.
SPECIAL_IDS = {
    "<|startoftext|>": 199998, "<|endoftext|>": 199999, "<|return|>": 200002, "<|constrain|>": 200003,
    "<|channel|>": 200005, "<|start|>": 200006, "<|end|>": 200007, "<|message|>": 200008, "<|call|>": 200012,
}
FIRST_SPECIAL_ID = 199998
RETURN, CALL, ENDOFTEXT = 200002, 200012, 199999
# Generation stops on these (the model's eos, pad and tool-call tokens).
STOP_IDS = frozenset({RETURN, CALL, ENDOFTEXT})

_SPECIAL_CUT = re.compile(r"(?<=<)(?=\|)")


@dataclass(frozen=True)
class Message:
    """One harmony message: role, text, and for the assistant its channel."""

    role: str
    content: str
    channel: str | None = None
    recipient: str | None = None  # `to=…`: a tool call's `functions.NAME`, a tool result's `assistant`
    content_type: str | None = None  # e.g. `<|constrain|>json` on a call


def system_message(effort: str, date: str | None, function_tools: bool = False) -> str:
    """The system message body: identity, knowledge cutoff, date, reasoning effort, valid channels."""
    if effort not in EFFORTS:
        raise ValueError(f"effort must be one of {', '.join(EFFORTS)}, not {effort!r}")
    lines = [IDENTITY, f"Knowledge cutoff: {KNOWLEDGE_CUTOFF}"]
    if date:
        lines.append(f"Current date: {date}")
    return ("\n".join(lines) + f"\n\nReasoning: {effort}\n\n"
            "# Valid channels: analysis, commentary, final. Channel must be included for every message."
            + ("\nCalls to these tools must go to the commentary channel: 'functions'." if function_tools else ""))


Part = tuple[str, bool]  # (text, plain): plain text is tokenized without parsing special tokens


def render_message(message: Message) -> str:
    """`<|start|>role[ to=R][<|channel|>ch][ type]<|message|>content<|end|>` (`<|call|>` ends a call)."""
    return "".join(text for text, _ in message_parts(message))


def message_parts(message: Message) -> list[Part]:
    """A message as header, content and end; the content is plain text (a tool result that spells
    `<|end|>` stays text, as openai-harmony renders it)."""
    head = message.role
    if message.recipient and message.recipient != "all":
        head += f" to={message.recipient}"
    if message.channel:
        head += f"<|channel|>{message.channel}"
    if message.content_type:
        head += f" {message.content_type}"
    end = "<|call|>" if message.role == "assistant" and message.recipient else "<|end|>"
    return [(f"<|start|>{head}<|message|>", False), (message.content, True), (end, False)]


def drop_earlier_analysis(messages: Sequence[Message]) -> list[Message]:
    """Harmony's rule for earlier turns: analysis before the last `final` answer is not shown again."""
    last_final = max((i for i, m in enumerate(messages) if m.role == "assistant" and m.channel == "final"),
                     default=-1)
    return [m for i, m in enumerate(messages) if not (i < last_final and m.channel == "analysis")]


def render_prompt(messages: Sequence[Message], *, effort: str = "medium", date: str | None = None,
                  instructions: str = "", tools: Sequence = ()) -> str:
    """The whole prompt: system, developer (instructions, function tools), the conversation, `<|start|>assistant`.

    `tools` are `harmony_tools.ToolSpec`s, rendered into the developer message's `functions` namespace.
    """
    return "".join(text for text, _ in prompt_parts(messages, effort=effort, date=date,
                                                    instructions=instructions, tools=tools))


def prompt_parts(messages: Sequence[Message], *, effort: str = "medium", date: str | None = None,
                 instructions: str = "", tools: Sequence = ()) -> list[Part]:
    """render_prompt as parts: control text (special tokens parsed) and plain content."""
    parts = message_parts(Message("system", system_message(effort, date, function_tools=bool(tools))))
    developer = [f"# Instructions\n\n{instructions}"] if instructions else []
    if tools:
        from gptoss_cli.engine.harmony_tools import tools_section

        developer.append(tools_section(tools))
    if developer:
        parts += message_parts(Message("developer", "\n\n".join(developer)))
    for m in drop_earlier_analysis(messages):
        parts += message_parts(m)
    parts.append(("<|start|>assistant", False))
    return parts


def plain_pieces(text: str) -> list[str]:
    """Text cut between every `<` and `|`: llama.cpp matches gpt-oss's special spellings even with special
    parsing off (they are user-defined tokens), and no o200k token spans that cut, so the ids are those of
    the uncut text as plain text."""
    return _SPECIAL_CUT.split(text)


def tokenize_parts(parts: Sequence[Part], tokenize: Callable[[str], list[int]],
                   tokenize_plain: Callable[[str], list[int]]) -> list[int]:
    """Token ids of prompt parts: control text with special tokens, content as plain text."""
    out: list[int] = []
    for text, plain in parts:
        if text:
            out += tokenize_plain(text) if plain else tokenize(text)
    return out
