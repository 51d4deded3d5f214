"""The Responses API's output: items, the response object, and its event stream as OpenAI documents it.

Every output item is framed by `response.output_item.added` ... `response.output_item.done`. A `reasoning`
item holds one `reasoning_text` part and a `message` item one `output_text` part, each framed by
`response.content_part.added` ... `done` around its deltas, its `*.done` event carrying the whole text. A
`function_call` item streams its arguments as they are generated. The stream ends with one of
`response.completed`, `response.incomplete` (the token limit) or `response.failed` (with an error object),
whose response carries the same items as were streamed.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

from gptoss_cli.serve import plan as P
from gptoss_cli.serve.generation import FAILED, Generation, Outcome, now


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:24]}"


def failure(out: Outcome) -> dict[str, str]:
    """The error object of a response that failed (shutdown, a lost worker, a decode error)."""
    message = f"generation failed: {out.error}" if out.finish_reason == "error" else "the server is shutting down"
    return {"code": "server_error", "message": message}


class _Item:
    """One output item being streamed: its kind, id, index, text so far and (calls) tool name."""

    PREFIX = {"reasoning": "rs", "message": "msg", "function_call": "fc"}

    def __init__(self, kind: str, index: int, name: str = "") -> None:
        self.kind, self.index, self.name, self.text = kind, index, name, ""
        self.id = _id(self.PREFIX[kind])
        self.call_id = _id("call") if kind == "function_call" else ""

    def part(self) -> dict:
        if self.kind == "reasoning":
            return {"type": "reasoning_text", "text": self.text}
        return {"type": "output_text", "text": self.text, "annotations": [], "logprobs": []}

    def body(self, status: str) -> dict:
        """The item as the API shows it, with status in_progress, completed or incomplete."""
        if self.kind == "function_call":
            return {"type": "function_call", "id": self.id, "call_id": self.call_id, "name": self.name,
                    "arguments": self.text, "status": status}
        content = [self.part()] if status != "in_progress" else []
        if self.kind == "reasoning":
            return {"type": "reasoning", "id": self.id, "summary": [], "content": content, "status": status}
        return {"type": "message", "id": self.id, "role": "assistant", "status": status, "content": content}


class ResponseStream:
    """Turns a generation's events into Responses events; `items` are the finished output items."""

    def __init__(self, plan: P.Plan) -> None:
        self.plan, self.id, self.created, self.seq = plan, _id("resp"), now(), 0
        self.items: list[dict] = []
        self.open: _Item | None = None

    def ev(self, kind: str, **fields) -> dict:
        """One event, numbered."""
        self.seq += 1
        return {"type": kind, "sequence_number": self.seq - 1, **fields}

    def envelope(self, status: str, out: Outcome | None, error: dict | None = None) -> dict:
        """The response object."""
        return envelope(self.plan, self.id, self.created, status, list(self.items), out, error)

    def start(self) -> list[dict]:
        """response.created and response.in_progress."""
        start = self.envelope("in_progress", None)
        return [self.ev("response.created", response=start), self.ev("response.in_progress", response=start)]

    def delta(self, kind: str, text: str, name: str = "") -> list[dict]:
        """Text for an item of kind (opened first if another kind, or none, is open)."""
        evs = self.begin(kind, name) if self.open is None or self.open.kind != kind else []
        it = self.open
        assert it is not None  # begin() opened one if none was
        it.text += text
        at = {"item_id": it.id, "output_index": it.index}
        if kind == "function_call":
            return evs + [self.ev("response.function_call_arguments.delta", **at, delta=text)]
        if kind == "reasoning":
            return evs + [self.ev("response.reasoning_text.delta", **at, content_index=0, delta=text)]
        return evs + [self.ev("response.output_text.delta", **at, content_index=0, delta=text, logprobs=[])]

    def begin(self, kind: str, name: str = "") -> list[dict]:
        """Close the open item, open a new one of kind."""
        evs = self.close("completed")
        self.open = it = _Item(kind, len(self.items), name)
        evs.append(self.ev("response.output_item.added", output_index=it.index, item=it.body("in_progress")))
        if kind != "function_call":
            empty = {**it.part(), "text": ""}
            evs.append(self.ev("response.content_part.added", item_id=it.id, output_index=it.index,
                               content_index=0, part=empty))
        return evs

    def close(self, status: str) -> list[dict]:
        """The done events of the open item, if any."""
        it, self.open = self.open, None
        if it is None:
            return []
        at = {"item_id": it.id, "output_index": it.index}
        if it.kind == "function_call":
            evs = [self.ev("response.function_call_arguments.done", **at, name=it.name, arguments=it.text)]
        else:
            done = (self.ev("response.reasoning_text.done", **at, content_index=0, text=it.text)
                    if it.kind == "reasoning" else
                    self.ev("response.output_text.done", **at, content_index=0, text=it.text, logprobs=[]))
            evs = [done, self.ev("response.content_part.done", **at, content_index=0, part=it.part())]
        item = it.body(status)
        self.items.append(item)
        return evs + [self.ev("response.output_item.done", output_index=it.index, item=item)]

    def end(self, out: Outcome) -> list[dict]:
        """Close what is open and add what the end decided (the call, an empty answer), then the final event."""
        if out.finish_reason in FAILED:
            error = failure(out)
            return self.close("incomplete") + [self.ev("response.failed",
                                                       response=self.envelope("failed", out, error))]
        cut = out.finish_reason == "length"
        evs: list[dict] = []
        if out.call is not None and (self.open is None or self.open.kind != "function_call"):
            evs += self.begin("function_call", out.call.name)   # a call whose arguments were empty
        elif out.call is None and not cut and not any(i["type"] == "message" for i in self.items) \
                and (self.open is None or self.open.kind != "message"):
            evs += self.begin("message")                          # an empty answer is still an answer
        evs += self.close("incomplete" if cut else "completed")
        final = self.envelope("incomplete" if cut else "completed", out)
        return evs + [self.ev(f"response.{final['status']}", response=final)]


async def events(plan: P.Plan, gen: Generation) -> AsyncIterator[dict[str, Any]]:
    """The Responses event stream, each event with its type and sequence_number."""
    stream = ResponseStream(plan)
    for e in stream.start():
        yield e
    kinds = {"reasoning": "reasoning", "content": "message", "call": "function_call"}
    async for event in gen.events():
        batch = (stream.delta(kinds[event.kind], event.text, event.name) if event.kind in kinds
                 else stream.end(gen.out))
        for e in batch:
            yield e


def response(plan: P.Plan, out: Outcome) -> dict[str, Any]:
    """The non-streamed response object: the items the stream would have sent."""
    stream = ResponseStream(plan)
    if out.reasoning:
        stream.delta("reasoning", out.reasoning)
    if out.content:
        stream.delta("message", out.content)
    if out.call is not None and out.call.arguments:
        stream.delta("function_call", out.call.arguments, out.call.name)
    stream.end(out)
    return stream.envelope("incomplete" if out.finish_reason == "length" else "completed", out)


def envelope(plan: P.Plan, rid: str, created: int, status: str, output: list, out: Outcome | None,
             error: dict | None = None) -> dict:
    """A response object with its usage (once out is known)."""
    usage = None
    if out is not None:
        usage = {"input_tokens": out.prompt_tokens, "input_tokens_details": {"cached_tokens": out.reused_tokens},
                 "output_tokens": out.completion_tokens,
                 "output_tokens_details": {"reasoning_tokens": out.reasoning_tokens},
                 "total_tokens": out.prompt_tokens + out.completion_tokens}
    return {"id": rid, "object": "response", "created_at": created, "model": plan.model, "status": status,
            "output": output, "usage": usage, "error": error,
            "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
            "instructions": "\n\n".join(plan.instructions) or None, "parallel_tool_calls": False,
            "tool_choice": "auto", "tools": [], "reasoning": {"effort": plan.effort, "summary": None},
            "temperature": plan.temperature, "top_p": plan.top_p, "max_output_tokens": plan.max_tokens,
            "text": {"format": {"type": "text"}}, "metadata": {}}
