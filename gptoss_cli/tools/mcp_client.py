"""MCP servers through the official SDK: start, list tools, call them from synchronous code, shut down.

Every server lives in one task of an asyncio loop that runs in a background thread; the chat (which
runs llama.cpp in the main thread) calls `ToolHub.call`, which waits for the result and turns Ctrl-C
into a cancelled request (the SDK then sends `notifications/cancelled`). Stdio servers get the SDK's
minimal default environment plus the keys named by --mcp-env, never the whole environment.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from gptoss_cli.tools.results import ToolResult, describe_result
from gptoss_cli.tools.servers import (
    RemoteTool,
    ServerSpec,
    ToolServerError,
    clean_schema,
    model_name,
    parse_server,
    safe_name,
    start_error,
    unique_labels,
)

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup
if TYPE_CHECKING:
    from mcp import ClientSession

__all__ = ["RemoteTool", "ServerSpec", "ToolHub", "ToolServerError", "parse_server"]

START_TIMEOUT_S = 60.0  # `npx -y PACKAGE` downloads on its first run
CALL_TIMEOUT_S = 120.0


@dataclass
class _Server:
    spec: ServerSpec
    session: ClientSession | None = None   # set while alive
    tools: list = field(default_factory=list)
    alive: bool = False
    stop: asyncio.Event | None = None
    task: asyncio.Task | None = None
    error: BaseException | None = None


class ToolHub:
    """The MCP servers of one chat: started together, called by tool name, shut down together."""

    def __init__(self, specs: list[ServerSpec], *, start_timeout: float = START_TIMEOUT_S,
                 call_timeout: float = CALL_TIMEOUT_S, log_dir: Path | None = None) -> None:
        self.specs, self.start_timeout, self.call_timeout = specs, start_timeout, call_timeout
        self.log_dir = log_dir
        self.servers: dict[str, _Server] = {}
        self.tools: dict[str, RemoteTool] = {}
        self.renamed: list[str] = []  # notes on name clashes and how they were resolved
        self.withdrawn: list[str] = []  # servers found dead, not yet reported to the user
        self._logs: list = []  # stderr files handed to the server processes
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="mcp", daemon=True)
        self._thread.start()

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Start every server and list its tools; on any failure stop the started ones and raise."""
        labels = unique_labels([s.label for s in self.specs])
        self.servers = {label: _Server(spec) for label, spec in zip(labels, self.specs, strict=True)}
        try:
            self._run(self._start_all(), self.start_timeout + 10)
            failed = [(label, s.spec, s.error) for label, s in self.servers.items() if s.error is not None]
            failed.sort(key=lambda item: isinstance(item[2], TimeoutError))  # a definite cause first
            if failed:
                label, spec, error = failed[0]
                raise start_error(spec, error, self._log_path(label))
        except BaseException:
            self.close()
            raise
        self._index_tools()

    def close(self) -> None:
        """Shut every server down (stdio processes are ended) and stop the loop; idempotent."""
        if not self._thread.is_alive():
            return
        try:
            self._run(self._close_all(), 15)
        except BaseException:  # noqa: BLE001 - closing must not hide the error that led here
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        for log in self._logs:
            log.close()

    def __enter__(self) -> ToolHub:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- calls -------------------------------------------------------------------------------------

    def call(self, name: str, arguments: dict) -> ToolResult:
        """Call a tool; errors come back as an error result. Ctrl-C cancels the call and is re-raised."""
        tool = self.tools.get(name)
        t0 = time.perf_counter()
        if tool is None:
            return ToolResult(f"unknown tool {name!r}; the tools are: {', '.join(self.tools) or 'none'}",
                              True, 0.0)
        server = self.servers[tool.server]
        future = asyncio.run_coroutine_threadsafe(self._call(server, tool, arguments), self._loop)
        try:
            result = future.result(self.call_timeout + 5)
        except KeyboardInterrupt:
            future.cancel()
            raise
        except FutureTimeout:
            future.cancel()
            result = ToolResult(f"the tool did not answer within {self.call_timeout:.0f} s", True)
        except Exception as exc:  # noqa: BLE001 - any failure of the call goes back to the model
            result = ToolResult(f"{type(exc).__name__}: {exc}", True)
            if not self._alive_now(server):
                self._withdraw(tool.server)
                result = ToolResult(f"the MCP server {tool.server} stopped; its tools are withdrawn", True)
        result.seconds = time.perf_counter() - t0
        return result

    def by_server(self) -> dict[str, list[RemoteTool]]:
        """Live tools grouped by server, for /tools."""
        out: dict[str, list[RemoteTool]] = {label: [] for label, s in self.servers.items() if s.alive}
        for tool in self.tools.values():
            out.setdefault(tool.server, []).append(tool)
        return out

    # -- inside the loop ---------------------------------------------------------------------------

    async def _start_all(self) -> None:
        await asyncio.gather(*(self._start(label, server) for label, server in self.servers.items()))

    async def _start(self, label: str, server: _Server) -> None:
        ready, stop = asyncio.Event(), asyncio.Event()
        server.stop = stop
        server.task = asyncio.create_task(self._serve(label, server, ready, stop))
        try:
            await asyncio.wait_for(ready.wait(), self.start_timeout)
        except asyncio.TimeoutError:
            server.error = TimeoutError(f"no handshake within {self.start_timeout:.0f} s")
            server.task.cancel()
            await asyncio.gather(server.task, return_exceptions=True)

    async def _serve(self, label: str, server: _Server, ready: asyncio.Event, stop: asyncio.Event) -> None:
        from mcp import ClientSession

        try:
            async with self._transport(label, server.spec) as streams:
                async with ClientSession(streams[0], streams[1]) as session:
                    await session.initialize()
                    server.tools = await _list_all(session)
                    server.session, server.alive = session, True
                    ready.set()
                    await stop.wait()
        except asyncio.CancelledError:
            raise
        except BaseException as exc:  # noqa: BLE001 - reported by start() or as a dead server
            server.error = server.error or _unwrap(exc)
        finally:
            server.alive = False
            ready.set()

    def _transport(self, label: str, spec: ServerSpec):
        if spec.url:
            from mcp.client.streamable_http import streamable_http_client

            return streamable_http_client(spec.url)
        from mcp.client.stdio import StdioServerParameters, stdio_client

        params = StdioServerParameters(command=spec.command[0], args=list(spec.command[1:]), env=dict(spec.env))
        return stdio_client(params, errlog=self._errlog(label))

    async def _call(self, server: _Server, tool: RemoteTool, arguments: dict) -> ToolResult:
        if not server.alive or server.session is None:
            return ToolResult(f"the MCP server {tool.server} is not running", True)
        result = await server.session.call_tool(tool.remote_name, arguments,
                                                read_timeout_seconds=self.call_timeout)
        return describe_result(result)

    async def _alive(self, server: _Server) -> bool:
        if not server.alive or server.session is None:
            return False
        try:
            await asyncio.wait_for(server.session.send_ping(), 5)
            return True
        except BaseException:  # noqa: BLE001
            return False

    async def _close_all(self) -> None:
        for server in self.servers.values():
            if server.stop is not None:
                server.stop.set()
        tasks = [s.task for s in self.servers.values() if s.task is not None]
        if tasks:
            done, pending = await asyncio.wait(tasks, timeout=10)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    # -- helpers -----------------------------------------------------------------------------------

    def _alive_now(self, server: _Server) -> bool:
        try:
            return self._run(self._alive(server), 10)
        except Exception:  # noqa: BLE001 - no answer in time: treat it as gone
            return False

    def _run(self, coro, timeout: float):
        future: Future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout)
        except BaseException:
            future.cancel()
            raise

    def _index_tools(self) -> None:
        """Name every tool for the model; a name already taken gets its server's name in front."""
        self.tools.clear()
        for label, server in self.servers.items():
            for t in server.tools:
                name = model_name(t.name)
                if name in self.tools:
                    first = self.tools[name].server
                    name = safe_name(f"{label}_{name}")
                    self.renamed.append(f"{label} and {first} both have a tool {t.name!r}: "
                                        f"{first}'s keeps the name, {label}'s is called {name!r}")
                self.tools[name] = RemoteTool(label, name, t.name, t.description or "",
                                              clean_schema(t.input_schema))

    def _withdraw(self, label: str) -> None:
        self.servers[label].alive = False
        for name in [n for n, t in self.tools.items() if t.server == label]:
            del self.tools[name]
        self.withdrawn.append(label)

    def _log_path(self, label: str) -> Path | None:
        return self.log_dir / f"{safe_name(label)}.log" if self.log_dir else None

    def _errlog(self, label: str):
        path = self._log_path(label)
        if path is None:
            log = open(os.devnull, "w")  # noqa: SIM115 - closed by close()
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            log = open(path, "w", encoding="utf-8")  # noqa: SIM115
        self._logs.append(log)
        return log


async def _list_all(session) -> list:
    from mcp import types

    tools, cursor = [], None
    while True:
        page = await session.list_tools(params=types.PaginatedRequestParams(cursor=cursor) if cursor else None)
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor:
            return tools


def _unwrap(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc
