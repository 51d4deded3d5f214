"""A small MCP server written with the official SDK, for the tests (stdio, or streamable HTTP with --http PORT)."""

from __future__ import annotations

import asyncio
import base64
import os
import sys
from typing import Literal

from mcp.server.mcpserver import MCPServer
from mcp.types import ImageContent

server = MCPServer("demo")
_original_call = server.call_tool


async def _logged_call(name, arguments, *args, **kwargs):
    """Every call reaching the server is appended to $CALL_LOG (tests check that declined calls never do)."""
    log = os.environ.get("CALL_LOG")
    if log:
        with open(log, "a") as f:
            f.write(f"{name}\n")
    return await _original_call(name, arguments, *args, **kwargs)


server.call_tool = _logged_call


@server.tool()
def add(a: int, b: int) -> str:
    """Adds two integers."""
    return str(a + b)


@server.tool()
def echo_env(name: str) -> str:
    """The value of an environment variable in the server, or <unset>."""
    return os.environ.get(name, "<unset>")


@server.tool()
def fail(code: int = 1) -> str:
    """Always raises."""
    raise ValueError(f"failed with code {code}")


@server.tool()
def big(n: int) -> str:
    """n characters of text."""
    return "x" * n


@server.tool()
def picture() -> ImageContent:
    """A tiny PNG."""
    return ImageContent(type="image", data=base64.b64encode(b"\x89PNG" + b"\0" * 96).decode(), mime_type="image/png")


def _mark(path: str, text: str) -> None:
    """Write a marker file whole under its name (renamed into place): a test that sees it can read it."""
    with open(path + ".part", "w") as f:
        f.write(text)
    os.replace(path + ".part", path)


@server.tool()
async def sleep(seconds: float) -> str:
    """Sleeps, then says so; writes a marker file when cancelled if MARKER is set."""
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        marker = os.environ.get("MARKER")
        if marker:
            _mark(marker, "cancelled")
        raise
    return f"slept {seconds}"


@server.tool()
async def wait() -> str:
    """Waits 60 s (a call to cancel with Ctrl-C); writes $MARKER.started, and $MARKER when cancelled."""
    marker = os.environ.get("MARKER")
    if marker:
        _mark(marker + ".started", "started")
    return await sleep(60)


@server.tool()
def die() -> str:
    """Ends the server process."""
    os._exit(3)


@server.tool()
def weather(city: str, unit: Literal["c", "f"] = "c") -> str:
    """Current weather of a city."""
    return f"{city}: 21 {unit}, sunny"


if __name__ == "__main__":
    if "--http" in sys.argv:
        port = int(sys.argv[sys.argv.index("--http") + 1])
        server.run("streamable-http", host="127.0.0.1", port=port)
    else:
        server.run()
