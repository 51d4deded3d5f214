"""Requests in flight, counted at the ASGI edge, and how serve ends every one of them when a worker is lost.

A worker lost over `--rpc` makes llama.cpp abort inside a decode step; rpc/faults.py prints the error line and
then runs the closers registered here before it exits: every open and waiting job ends with that error, and
the process waits (at most DRAIN_S) until each request has written its end (an error event, chunk or JSON).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

DRAIN_S = 10.0


class InFlight:
    """ASGI middleware counting the HTTP requests whose response is not fully sent yet."""

    def __init__(self, app) -> None:
        self.app, self.count = app, 0
        self.idle = threading.Event()   # set while nothing is in flight; waited on from another thread
        self.idle.set()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        self.count += 1
        self.idle.clear()
        try:
            await self.app(scope, receive, send)
        finally:
            self.count -= 1
            if self.count == 0:
                self.idle.set()


def end_all_on_worker_lost(engine, inflight: InFlight, drain_s: float = DRAIN_S) -> Callable[[], None]:
    """On a lost worker, end every request with its error line before the process exits. Returns an undo."""
    from gptoss_cli.rpc.faults import before_exit

    def closer(line: str) -> None:
        engine.fail_open(f"error: {line}")
        inflight.idle.wait(drain_s)

    return before_exit(closer)
