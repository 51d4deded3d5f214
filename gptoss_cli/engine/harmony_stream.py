"""Harmony parsing: a streaming state machine fed one generated token id at a time, lenient where the official
parser raises: a bad or missing header makes the text a `final` message, and control tokens never reach the
content.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable
from dataclasses import dataclass

from gptoss_cli.engine.harmony import CHANNELS, SPECIAL_IDS, Message

_MAX_HEADER_CHARS = 256
_RECIPIENT = re.compile(r"to=([^\s<]+)")


@dataclass
class ParsedMessage:
    """A message read back from generated tokens."""

    role: str
    channel: str
    content: str = ""
    recipient: str | None = None
    content_type: str | None = None


Delta = tuple[str, str]  # (channel, text)


def is_call(message: ParsedMessage | Message | None) -> bool:
    """Does this assistant message address a tool (`to=functions.NAME`, `to=browser.search`, …)?"""
    return (message is not None and message.role == "assistant" and bool(message.recipient)
            and message.recipient not in ("all", "user", "assistant"))

_EXPECT_START, _HEADER, _CONTENT = "expect_start", "header", "content"


class StreamParser:
    """Splits generated token ids into harmony messages as they arrive.

    Starts inside the header of an assistant message (the prompt ends with `<|start|>assistant`).
    `feed` returns the new content text of the current channel, if any; `done` turns true on
    `<|return|>`, `<|call|>`, `<|endoftext|>`, `<|end|>` closing a `final` message that has text, or the end of a
    message addressed to a tool (stop_reason "call", whatever closed it: see harmony_tools.find_call).
    """

    def __init__(self, token_bytes: Callable[[int], bytes], role: str | None = "assistant",
                 specials: dict[str, int] | None = None) -> None:
        self._token_bytes = token_bytes
        ids = dict(SPECIAL_IDS, **(specials or {}))
        self._name = {v: k for k, v in ids.items()}
        self._first_special = min(ids.values())
        self.messages: list[ParsedMessage] = []
        self.current: ParsedMessage | None = None
        self.done = False
        self.stop_reason: str | None = None
        self._state = _HEADER
        self._role = role
        self._header: list[str] = []
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    @property
    def channel(self) -> str | None:
        """Channel of the message being generated, None while in a header."""
        return self.current.channel if self.current else None

    def text(self, channel: str) -> str:
        """All content generated so far on one channel, messages joined by a blank line."""
        msgs = self.messages + ([self.current] if self.current else [])
        return "\n\n".join(m.content for m in msgs if m.channel == channel and m.role == "assistant")

    def feed(self, token: int) -> Delta | None:
        """Take one generated token; return (channel, new text) when it adds content."""
        if self.done:
            return None
        name = self._name.get(token)
        if name is None and token >= self._first_special:
            return None  # reserved control tokens carry no text
        if self._state == _CONTENT:
            return self._content(token, name)
        if self._state == _HEADER:
            return self._header_token(token, name)
        return self._expect_start(token, name)

    def finish(self) -> Delta | None:
        """Generation ended without a stop token: close what is open, salvaging a dangling header."""
        delta = None
        if self._state == _HEADER and self._header:
            delta = self._fallback()
        if self.current is not None:
            delta = self._flush(final=True) or delta
            self._close()
        self._state = _EXPECT_START
        return delta

    # -- states ------------------------------------------------------------------------------------

    def _content(self, token: int, name: str | None) -> Delta | None:
        current = self.current
        assert current is not None, "the content state always has an open message"
        if name is None:
            text = self._decoder.decode(self._token_bytes(token))
            if not text:
                return None
            current.content += text
            return current.channel, text
        if name in ("<|end|>", "<|return|>", "<|call|>", "<|endoftext|>"):
            delta = self._flush(final=True)
            ended_final = current.channel == "final"
            call = is_call(current)
            self._close()
            self._state = _EXPECT_START
            if call:  # a tool call ends the reply whatever token closed it
                self._stop("call")
            elif name != "<|end|>":
                self._stop({"<|return|>": "return", "<|call|>": "call"}.get(name, "eos"))
            elif ended_final and current.content:  # an empty final message answered nothing: go on
                self._stop("end")
            return delta
        if name == "<|start|>":  # a new message without <|end|>: close this one
            delta = self._flush(final=True)
            call = is_call(current)
            self._close()
            self._begin_header(None)
            if call:
                self._stop("call")
            return delta
        return None  # <|message|>, <|channel|>, <|constrain|> and others are dropped from content

    def _header_token(self, token: int, name: str | None) -> Delta | None:
        if name == "<|message|>":
            return self._open(*self._parse_header())
        if name in ("<|channel|>", "<|constrain|>"):
            self._header.append(name)
            return None
        if name is None:
            self._header.append(self._token_bytes(token).decode("utf-8", errors="replace"))
            return self._fallback() if not self._plausible() else None
        # Any other control token inside a header: the header was text after all.
        delta = self._fallback() if self._header else None
        if self.current is None:
            self.current = ParsedMessage(self._role or "assistant", "final")
            self._state = _CONTENT
        rest = self._content(token, name)
        return rest or delta

    def _expect_start(self, token: int, name: str | None) -> Delta | None:
        if name == "<|start|>":
            self._begin_header(None)
            return None
        if name in ("<|return|>", "<|call|>", "<|endoftext|>"):
            self._stop({"<|return|>": "return", "<|call|>": "call"}.get(name, "eos"))
            return None
        if name == "<|channel|>":  # `<|start|>assistant` left out: lenient
            self._begin_header("assistant")
            self._header.append(name)
            return None
        if name is None:  # text where a new message should begin: treat it as the answer
            self._begin_header("assistant")
            self._header.append(self._token_bytes(token).decode("utf-8", errors="replace"))
            return self._fallback()
        return None

    # -- helpers -----------------------------------------------------------------------------------

    def _begin_header(self, role: str | None) -> None:
        self._state, self._role, self._header = _HEADER, role, []

    def _plausible(self) -> bool:
        """Could the header text so far still become a valid harmony header?"""
        text = "".join(self._header)
        if len(text) > _MAX_HEADER_CHARS or "\n" in text:
            return False
        if self._role is None:
            m = re.match(r"[A-Za-z_][\w.\-]*", text)
            if m is None:
                return text == ""
            text = text[m.end():]
        head = text.split("<|channel|>", 1)[0].lstrip(" ")
        return head == "" or head.startswith("to=") or "to=".startswith(head)

    def _parse_header(self) -> tuple[str, str | None, str | None, str | None]:
        text = "".join(self._header)
        role = self._role
        if role is None:
            m = re.match(r"[A-Za-z_][\w.\-]*", text)
            role = m.group(0) if m else "assistant"
            text = text[m.end():] if m else text
        channel = None
        if "<|channel|>" in text:
            before, after = text.split("<|channel|>", 1)
            m = re.match(r"[^\s<]*", after)
            assert m is not None  # the pattern matches the empty string
            channel = m.group(0) or None
            text = before + after[m.end():]
        recipient = None
        m = _RECIPIENT.search(text)
        if m:
            recipient = m.group(1)
            text = text[:m.start()] + text[m.end():]
        content_type = text.strip() or None
        return role, channel, recipient, content_type

    def _open(self, role: str, channel: str | None, recipient: str | None,
              content_type: str | None) -> Delta | None:
        if role != "assistant":  # the model began someone else's turn: its own reply is over
            self._stop("end")
            return None
        if channel not in CHANNELS:
            channel = "final"
        self.current = ParsedMessage(role, channel, "", recipient, content_type)
        self._state, self._header = _CONTENT, []
        return None

    def _fallback(self) -> Delta | None:
        """A malformed header: its text (control tokens removed) starts a `final` message."""
        text = "".join(p for p in self._header if p not in ("<|channel|>", "<|constrain|>"))
        if self._role is None and text.startswith("assistant"):
            text = text[len("assistant"):]
        self.current = ParsedMessage(self._role or "assistant", "final", text)
        self._state, self._header = _CONTENT, []
        return ("final", text) if text else None

    def _flush(self, final: bool) -> Delta | None:
        text = self._decoder.decode(b"", final=final)
        if text and self.current is not None:
            self.current.content += text
            return self.current.channel, text
        return None

    def _close(self) -> None:
        if self.current is not None:
            self.messages.append(self.current)
        self.current = None
        self._decoder.reset()

    def _stop(self, reason: str) -> None:
        self.done, self.stop_reason = True, reason
