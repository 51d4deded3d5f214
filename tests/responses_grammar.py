"""The Responses API's streaming event grammar, as OpenAI's API reference documents it, as a state machine.

Written from the reference (platform.openai.com/docs/api-reference/responses-streaming) and the event
types of the `openai` package, not from gptoss's code:

    stream     := response.created response.in_progress? item* terminal
    item       := output_item.added (part* | arguments) output_item.done
    part       := content_part.added (text delta)* text done content_part.done
                  (text: output_text for a message's output_text part, reasoning_text for a reasoning_text part)
    arguments  := function_call_arguments.delta* function_call_arguments.done
    terminal   := response.completed | response.incomplete | response.failed

`sequence_number` counts events from 0 with no gap; `output_index` numbers items in the order they are added;
`item_id` names the item its index points at; `content_index` numbers an item's parts. Every *.done event
carries the whole text its deltas built, and the response in the terminal event lists the items exactly as
their output_item.done events sent them.
"""

from __future__ import annotations

TEXT_EVENTS = {"output_text": ("response.output_text.delta", "response.output_text.done"),
               "reasoning_text": ("response.reasoning_text.delta", "response.reasoning_text.done")}
TERMINAL = {"response.completed": "completed", "response.incomplete": "incomplete", "response.failed": "failed"}


class GrammarError(AssertionError):
    """The stream broke the documented event grammar."""


class ResponsesGrammar:
    """Feed events (dicts) in order; `finish()` checks the stream ended properly and returns the response."""

    def __init__(self) -> None:
        self.seq = 0
        self.response: dict | None = None      # from response.created, then the terminal event's
        self.items: list[dict] = []            # output_item.added items, then their done versions
        self.done: list[bool] = []
        self.item: int | None = None           # index of the open item
        self.part: dict | None = None          # the open part: {"type", "text", "index", "text_done"}
        self.parts: list[list[str]] = []       # finished parts' text, per item
        self.arguments = ""
        self.arguments_done = False
        self.terminal: str | None = None
        self.kinds: list[str] = []

    def check(self, cond: bool, why: str) -> None:
        if not cond:
            raise GrammarError(f"event {self.seq} ({self.kinds[-1] if self.kinds else '-'}): {why}")

    def feed(self, ev: dict) -> None:
        """Take one event."""
        kind = ev.get("type")
        self.kinds.append(kind)
        self.check(self.terminal is None, f"an event after {self.terminal}")
        self.check(ev.get("sequence_number") == self.seq, f"sequence_number {ev.get('sequence_number')}")
        self.seq += 1
        if self.response is None:
            self.check(kind == "response.created", "the stream must begin with response.created")
            self.response = ev["response"]
            self.check(self.response["status"] in ("in_progress", "queued"), "created with a final status")
            return
        handler = getattr(self, "_" + kind.replace("response.", "").replace(".", "_"), None)
        self.check(handler is not None, f"unknown event type {kind!r}")
        handler(ev)

    # --- response ---

    def _in_progress(self, ev: dict) -> None:
        self.check(self.kinds.count("response.in_progress") == 1 and not self.items, "in_progress out of place")
        self.check(ev["response"]["id"] == self.response["id"], "another response id")

    def _terminal(self, ev: dict) -> None:
        kind = ev["type"]
        self.check(self.item is None, "the stream ended with an item still open")
        resp = ev["response"]
        self.check(resp["id"] == self.response["id"], "another response id")
        self.check(resp["status"] == TERMINAL[kind], f"{kind} with status {resp['status']}")
        self.check(resp["output"] == self.items, "the final output differs from the streamed items")
        if kind == "response.failed":
            err = resp.get("error") or {}
            self.check(bool(err.get("code")) and bool(err.get("message")), "response.failed without an error object")
        if kind == "response.incomplete":
            self.check(bool((resp.get("incomplete_details") or {}).get("reason")), "incomplete without a reason")
        self.terminal, self.response = kind, resp

    _completed = _incomplete = _failed = _terminal

    # --- items ---

    def _at(self, ev: dict, with_item_id: bool = True) -> dict:
        self.check(self.item is not None and ev["output_index"] == self.item, "not about the open item")
        item = self.items[self.item]
        if with_item_id:
            self.check(ev["item_id"] == item["id"], "item_id does not name the item at output_index")
        return item

    def _output_item_added(self, ev: dict) -> None:
        self.check(self.item is None, "an item added while another is open")
        self.check(ev["output_index"] == len(self.items), f"output_index {ev['output_index']} is not the next")
        item = ev["item"]
        self.check(bool(item.get("id")) and item["id"] not in {i["id"] for i in self.items}, "no or repeated id")
        self.check(item["type"] in ("message", "reasoning", "function_call"), f"item type {item['type']}")
        if item["type"] == "function_call":
            self.check(item["arguments"] == "" and bool(item["name"]) and bool(item["call_id"]), "call item shape")
        else:
            self.check(item.get("content") == [], "an item added with content already in it")
        self.items.append(item)
        self.parts.append([])
        self.item, self.arguments, self.arguments_done = len(self.items) - 1, "", False

    def _output_item_done(self, ev: dict) -> None:
        item = self._at(ev, with_item_id=False)
        done = ev["item"]
        self.check(done["id"] == item["id"] and done["type"] == item["type"], "another item")
        self.check(self.part is None, "an item done with a part open")
        self.check(done.get("status") in ("completed", "incomplete"), f"done with status {done.get('status')}")
        if item["type"] == "function_call":
            self.check(self.arguments_done, "function_call_arguments.done missing")
            self.check(done["arguments"] == self.arguments, "the item's arguments differ from the deltas")
            self.check(done["name"] == item["name"] and done["call_id"] == item["call_id"], "call renamed")
        else:
            texts = [p["text"] for p in done["content"]]
            self.check(texts == self.parts[self.item], "the item's content differs from its parts")
            self.check(bool(texts), "a message or reasoning item without a content part")
        self.items[self.item] = done
        self.item = None

    # --- content parts ---

    def _content_part_added(self, ev: dict) -> None:
        item = self._at(ev)
        self.check(self.part is None, "a part added while another is open")
        self.check(ev["content_index"] == len(self.parts[self.item]), "content_index is not the next")
        kind = ev["part"]["type"]
        allowed = {"message": ("output_text", "refusal"), "reasoning": ("reasoning_text",)}.get(item["type"], ())
        self.check(kind in allowed, f"a {kind} part in a {item['type']} item")
        self.check(ev["part"]["text"] == "", "a part added with text in it")
        self.part = {"type": kind, "text": "", "index": ev["content_index"], "text_done": False}

    def _content_part_done(self, ev: dict) -> None:
        self._at(ev)
        part = self.part
        self.check(part is not None and ev["content_index"] == part["index"], "no such open part")
        self.check(part["text_done"], f"content_part.done before the part's {part['type']} done event")
        self.check(ev["part"]["type"] == part["type"] and ev["part"]["text"] == part["text"], "the part changed")
        self.parts[self.item].append(part["text"])
        self.part = None

    def _text(self, ev: dict, kind: str, done: bool) -> None:
        self._at(ev)
        part = self.part
        self.check(part is not None and part["type"] == kind and ev["content_index"] == part["index"],
                   f"no open {kind} part")
        self.check(not part["text_done"], "text after its done event")
        if done:
            self.check(ev["text"] == part["text"], "the done event's text is not the deltas joined")
            part["text_done"] = True
        else:
            self.check(isinstance(ev["delta"], str) and ev["delta"] != "", "an empty delta")
            part["text"] += ev["delta"]

    def _output_text_delta(self, ev: dict) -> None:
        self._text(ev, "output_text", False)

    def _output_text_done(self, ev: dict) -> None:
        self._text(ev, "output_text", True)

    def _reasoning_text_delta(self, ev: dict) -> None:
        self._text(ev, "reasoning_text", False)

    def _reasoning_text_done(self, ev: dict) -> None:
        self._text(ev, "reasoning_text", True)

    # --- function calls ---

    def _function_call_arguments_delta(self, ev: dict) -> None:
        item = self._at(ev)
        self.check(item["type"] == "function_call" and not self.arguments_done, "arguments out of place")
        self.check(isinstance(ev["delta"], str) and ev["delta"] != "", "an empty delta")
        self.arguments += ev["delta"]

    def _function_call_arguments_done(self, ev: dict) -> None:
        item = self._at(ev)
        self.check(item["type"] == "function_call" and not self.arguments_done, "arguments done out of place")
        self.check(ev["arguments"] == self.arguments, "the done event's arguments are not the deltas joined")
        self.arguments_done = True

    def finish(self) -> dict:
        """The terminal event's response, once the stream has ended."""
        self.check(self.terminal is not None, "the stream ended without response.completed/incomplete/failed")
        return self.response
