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


@server.tool()
def add(a: int, b: int) -> str:
    """Adds two integers."""
    return str(a + b)


@server.tool()
def echo_env(name: str) -> str:
    """The value of an environment variable in the server, or <unset>."""
    return os.environ.get(name, "<unset>")


@server.tool()
def fail(message: str = "boom") -> str:
    """Always raises."""
    raise ValueError(message)


@server.tool()
def big(n: int) -> str:
    """n characters of text."""
    return "x" * n


@server.tool()
def picture() -> ImageContent:
    """A tiny PNG."""
    return ImageContent(type="image", data=base64.b64encode(b"\x89PNG" + b"\0" * 96).decode(), mime_type="image/png")


@server.tool()
async def sleep(seconds: float) -> str:
    """Sleeps, then says so; writes a marker file when cancelled if MARKER is set."""
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        marker = os.environ.get("MARKER")
        if marker:
            open(marker, "w").write("cancelled")
        raise
    return f"slept {seconds}"


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
        server.settings.port = port
        server.run("streamable-http")
    else:
        server.run()
