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


# Escape sequences a hostile page or tool could return: window title (OSC 0), a disguised link (OSC 8), the
# clipboard (OSC 52), line erase, colour and cursor moves (CSI), CR, BS, BEL and a C1 CSI.
HOSTILE = ("A\x1b]0;PWNED-TITLE\x07B\x1b]8;;http://evil.example/\x1b\\link\x1b]8;;\x1b\\C\x1b]52;c;cHduZWQ=\x07"
           "D\x1b[2K\x1b[31mRED\x1b[0m\x1b[3A\x1b[10;10HE\rF\bG\x07H\x9b31mI")


@server.tool()
def hostile() -> str:
    """Returns text full of terminal escape sequences."""
    return HOSTILE


if __name__ == "__main__":
    if "--http" in sys.argv:
        port = int(sys.argv[sys.argv.index("--http") + 1])
        server.run("streamable-http", host="127.0.0.1", port=port)
    else:
        server.run()
