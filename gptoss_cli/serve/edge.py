"""The HTTP edge: who may talk to the server (Host, Origin, CORS, API key) and how a body is read.

A browser lets any web page send a "simple" cross-site POST (no preflight) and, after DNS rebinding, read
the answer of a server on 127.0.0.1. So a server bound to loopback answers only `Host: localhost`, a
loopback IP or `[::1]` (with any port); a request that carries an `Origin` (only browsers send one) is
refused unless `--allow-origin` lists it; and a body must be `Content-Type: application/json`, which a page
cannot send cross-site without a preflight that only listed origins pass. On a non-loopback address Host is
not checked (LAN clients use names this server cannot know); the API key guards it, and a page cannot
attach it.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import re
import sys
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response

from gptoss_cli.serve.api_error import APIError

MAX_DEPTH = 64              # JSON nesting a request may use (tool schemas included)
PREFLIGHT_MAX_AGE_S = 600
_ORIGIN = re.compile(r"[a-z][a-z0-9+.\-]*://[^/\s?#]+")
_SURROGATE = re.compile(r"[\ud800-\udfff]")
_HOST = re.compile(r"\[([0-9a-f:.]+)\](?::\d+)?|([^:\[\]]+)(?::\d+)?")   # [IPv6]:port or name:port
_READ = (b"host", b"origin", b"authorization", b"access-control-request-method", b"access-control-request-headers")


def normalize_origin(origin: str) -> str | None:
    """An `--allow-origin` value as browsers send it (`scheme://host[:port]`, lower case), `*`, or None."""
    text = origin.strip().rstrip("/").lower()
    return text if text == "*" or _ORIGIN.fullmatch(text) else None


def loopback_host_header(value: str) -> bool:
    """Whether a Host header names this machine by itself: `localhost`, a loopback IP or `[::1]`, any
    port. Names are not resolved: after DNS rebinding an attacker's name resolves to 127.0.0.1."""
    m = _HOST.fullmatch(value.strip().lower())
    if m is None:
        return False
    host = m.group(1) or m.group(2)
    if host in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Guard:
    """Host and Origin checks, CORS for allowed origins, then the API key, before any route runs or any
    body is read. A plain ASGI middleware: Starlette's BaseHTTPMiddleware would pass every streamed chunk
    through an extra task."""

    def __init__(self, app, *, check_host: bool, origins: tuple[str, ...] = (), key: str | None = None) -> None:
        self.app, self.check_host, self.origins = app, check_host, frozenset(origins)
        self.key = key.encode() if key else None

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode(): v.decode("latin-1") for k, v in scope["headers"] if k in _READ}
        refusal = self._refusal(headers)
        if refusal is not None:
            return await _answer(refusal, scope, receive, send)
        origin = headers.get("origin")
        if origin is not None and scope["method"] == "OPTIONS" and "access-control-request-method" in headers:
            return await self._preflight(origin, headers, scope, receive, send)
        if self.key is not None and scope["path"].startswith("/v1") and not self._key_ok(headers):
            token = headers.get("authorization", "")
            msg = "Incorrect API key provided" if token else "Missing API key: send Authorization: Bearer KEY"
            return await _answer(APIError(401, msg, code="invalid_api_key"), scope, receive, send,
                                 self._cors(origin))
        if origin is None:
            return await self.app(scope, receive, send)
        extra = self._cors(origin)

        async def send_with_cors(message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_cors)

    def _refusal(self, headers: dict[str, str]) -> APIError | None:
        host = headers.get("host")
        if self.check_host and host is not None and not loopback_host_header(host):
            return APIError(403, f"untrusted Host header {host[:100]!r}: this server is bound to loopback and "
                                 "answers only Host: 127.0.0.1, localhost or [::1]", code="forbidden_host",
                            type="permission_error")
        origin = headers.get("origin")
        if origin is not None and "*" not in self.origins and origin.lower().rstrip("/") not in self.origins:
            return APIError(403, f"cross-origin request from {origin[:100]!r} refused: start the server with "
                                 "--allow-origin ORIGIN to let that web page use it", code="forbidden_origin",
                            type="permission_error")
        return None

    def _key_ok(self, headers: dict[str, str]) -> bool:
        given = headers.get("authorization", "").encode("latin-1")
        token = given[7:] if given[:7].lower() == b"bearer " else b""
        return self.key is not None and hmac.compare_digest(token, self.key)

    def _cors(self, origin: str | None) -> list[tuple[bytes, bytes]]:
        if origin is None:
            return []
        return [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin")]

    async def _preflight(self, origin: str, headers: dict[str, str], scope, receive, send) -> None:
        asked = headers.get("access-control-request-headers", "")
        extra = [*self._cors(origin), (b"access-control-allow-methods", b"GET, POST"),
                 (b"access-control-max-age", str(PREFLIGHT_MAX_AGE_S).encode())]
        if asked:
            extra.append((b"access-control-allow-headers", asked.encode("latin-1")))
        await Response(status_code=204, headers={k.decode(): v.decode("latin-1") for k, v in extra})(
            scope, receive, send)


async def _answer(error: APIError, scope, receive, send, extra: list | None = None) -> None:
    response = JSONResponse(error.body(), status_code=error.status)
    response.raw_headers.extend(extra or [])
    await response(scope, receive, send)


async def read_json(request: Request, max_bytes: int, log: bool = False) -> dict:
    """The request's JSON object: 415 unless it is `application/json`, 413 as soon as more than max_bytes
    arrived (counted as they come, chunked or not), 400 for bad JSON, nesting over MAX_DEPTH or a lone
    surrogate (named by its path)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise APIError(415, f"Content-Type must be application/json, not {kind[:100]!r}" if kind else
                       "Content-Type: application/json is missing",
                       code="unsupported_media_type", type="invalid_request_error")
    too_big = APIError(413, f"request body over {max_bytes} bytes", code="request_too_large")
    size = request.headers.get("content-length")
    if size and size.isdigit() and int(size) > max_bytes:
        raise too_big
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > max_bytes:
            raise too_big
        chunks.append(chunk)
    raw = b"".join(chunks)
    if log:
        print(f"request {request.url.path}: {raw.decode('utf-8', 'replace')}", file=sys.stderr, flush=True)
    try:
        body = json.loads(raw)
    except RecursionError:
        raise APIError(400, f"the body is nested more than {MAX_DEPTH} deep", code="invalid_json") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise APIError(400, f"the body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(body, dict):
        raise APIError(400, "the body must be a JSON object", code="invalid_json")
    check_tree(body)
    return body


def check_tree(body: Any) -> None:
    """A 400 naming the first place nested over MAX_DEPTH or holding a lone UTF-16 surrogate (`"\\ud800"`
    parses in JSON but is no Unicode text: it cannot be tokenized or sent back as UTF-8)."""
    stack: list[tuple[Any, str, int]] = [(body, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if isinstance(value, str):
            if not value.isascii() and _SURROGATE.search(value):
                raise _bad(path, "holds a lone UTF-16 surrogate (not Unicode text)")
            continue
        if not isinstance(value, (dict, list)):
            continue
        if depth >= MAX_DEPTH:
            raise _bad(path, f"nested more than {MAX_DEPTH} deep")
        if isinstance(value, dict):
            for key, item in value.items():
                where = f"{path}.{key}" if path else str(key)
                if not key.isascii() and _SURROGATE.search(key):
                    raise _bad(path, "has a key with a lone UTF-16 surrogate (not Unicode text)")
                stack.append((item, where, depth + 1))
        else:
            stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value))


def _bad(path: str, why: str) -> APIError:
    shown = path.encode("utf-8", "backslashreplace").decode()[:200] or "the body"
    return APIError(400, f"{shown}: {why}", param=shown, code="invalid_value")
