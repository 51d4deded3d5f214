"""MCP tool results as text for the model: text kept, binary described, long results cut with a note."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

MAX_RESULT_CHARS = 16_000


@dataclass
class ToolResult:
    """What a call gave back: the text the model sees, whether it is an error, how long it took."""

    text: str
    is_error: bool = False
    seconds: float = 0.0


def describe_result(result, limit: int = MAX_RESULT_CHARS) -> ToolResult:
    """An SDK CallToolResult as a ToolResult (isError kept)."""
    parts = [_describe(item) for item in (result.content or [])]
    structured = getattr(result, "structured_content", None)
    if structured is not None and not any(getattr(i, "type", "") == "text" for i in result.content or []):
        parts.append(json.dumps(structured, ensure_ascii=False))
    return ToolResult(cut("\n".join(p for p in parts if p), limit), bool(result.is_error))


def cut(text: str, limit: int = MAX_RESULT_CHARS) -> str:
    """Text cut to `limit` characters with a note saying how much was left out."""
    if len(text) <= limit:
        return text
    return text[:limit] + f"\n[result cut: {limit} of {len(text)} characters shown]"


def _describe(item) -> str:
    kind = getattr(item, "type", "")
    if kind == "text":
        return item.text
    if kind in ("image", "audio"):
        return f"[{kind} {item.mime_type}, {_b64_size(item.data)} bytes, not shown]"
    if kind == "resource_link":
        return f"[resource link {item.uri}" + (f" ({item.mime_type})" if item.mime_type else "") + "]"
    if kind == "resource":
        res = item.resource
        text = getattr(res, "text", None)
        if text is not None:
            return f"[resource {res.uri}]\n{text}"
        mime = getattr(res, "mime_type", None) or "binary"
        return f"[resource {res.uri}: {mime}, {_b64_size(getattr(res, 'blob', ''))} bytes, not shown]"
    return f"[{kind or 'unknown'} content, not shown]"


def _b64_size(data: str) -> int:
    try:
        return len(base64.b64decode(data, validate=False))
    except (ValueError, TypeError):
        return len(data) * 3 // 4
