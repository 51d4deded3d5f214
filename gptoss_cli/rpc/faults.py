"""A worker lost mid-run: llama.cpp aborts the process on an RPC I/O error; turn that into our one-line error.

ggml-rpc calls GGML_ABORT when a worker stops answering (`Remote RPC server crashed or returned malformed
response`, `Failed to connect to ...`); ggml_abort hands the message to the abort callback, then calls
abort(). Our callback finds the worker that stopped (the first one refusing connections, or not answering
them: a vanished host, whose silence keepalive.py turned into an I/O error), runs the
registered savers (the REPL writes the conversation), prints one line, runs the registered closers with it
(serve ends every open request with it) and leaves with exit code 1 before abort() runs. Aborts that are not
about RPC keep ggml's behaviour (message on stderr, then abort()).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable

from converters.errors import RunFailure
from gptoss_cli.rpc.endpoints import Endpoint, probe

# Substrings of ggml-rpc's abort messages (ggml-rpc.cpp: RPC_STATUS_ASSERT, rpc_dispatcher::start).
RPC_ABORTS = ("Remote RPC server", "Failed to connect to", "RPC handshake failed", "RPC transport")
EXIT_FAILED = 1


class WorkerLost(RunFailure):
    """A worker stopped answering while the model was loaded or running."""

    what = "worker lost"


class _Guard:
    def __init__(self) -> None:
        self.endpoints: list[Endpoint] = []
        self.savers: list[Callable[[], str | None]] = []
        self.closers: list[Callable[[str], None]] = []
        self.callback: object | None = None  # the ctypes ABORT_CALLBACK, kept alive once installed
        self.connecting: Endpoint | None = None   # the worker being handshaken with, if any


_GUARD = _Guard()


def guard(endpoints: list[Endpoint]) -> None:
    """Install the abort callback for these workers (once per process; later calls add workers)."""
    from gptoss_cli.engine import ggml

    _GUARD.endpoints += [e for e in endpoints if e not in _GUARD.endpoints]
    if _GUARD.callback is None:
        _GUARD.callback = ggml.ABORT_CALLBACK(_on_abort)   # kept alive for the process
        ggml.lib().ggml_set_abort_callback(_GUARD.callback)


def connecting(endpoint: Endpoint | None) -> None:
    """Mark the handshake with endpoint as under way (None: done): an abort then means a bad handshake."""
    _GUARD.connecting = endpoint


def on_worker_lost(saver: Callable[[], str | None]) -> Callable[[], None]:
    """Run saver before exiting on a lost worker; it may return a note for the error line. Returns an undo."""
    _GUARD.savers.append(saver)
    return lambda: _GUARD.savers.remove(saver) if saver in _GUARD.savers else None


def before_exit(closer: Callable[[str], None]) -> Callable[[], None]:
    """Run closer(error line) after the line is printed, before exiting on a lost worker. Returns an undo."""
    _GUARD.closers.append(closer)
    return lambda: _GUARD.closers.remove(closer) if closer in _GUARD.closers else None


def lost_worker(endpoints: list[Endpoint], timeout: float = 2.0,
                settle_s: float = 2.0) -> tuple[Endpoint, str] | None:
    """The first worker that no longer accepts connections, and why (refused, no answer within timeout: a
    vanished host); None when all still do after settle_s (a killed worker's client socket can close a
    moment before its listening one)."""
    deadline = time.monotonic() + settle_s
    while True:
        for endpoint in endpoints:
            why = probe(endpoint, timeout)
            if why is not None:
                return endpoint, why
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.1)


def lost_message(ggml_message: str, endpoints: list[Endpoint], notes: list[str]) -> str:
    """The one error line for an RPC abort."""
    dead = lost_worker(endpoints)
    where = str(dead[0]) if dead else ", ".join(map(str, endpoints))
    why = (f"it stopped answering (connecting again: {dead[1]})" if dead
           else f"llama.cpp's RPC client failed: {ggml_message.split(': ', 1)[-1].strip()}")
    hint = "Restart `gptoss worker` there and rerun"
    if dead and "refused" not in dead[1]:
        hint = "Check that machine and its network, then restart `gptoss worker` there and rerun"
    if notes:
        hint = "; ".join(notes) + ". " + hint
    return WorkerLost(where, why, hint).message()


def _on_abort(message: bytes | None) -> None:
    text = (message or b"").decode("utf-8", "replace")
    if not any(s in text for s in RPC_ABORTS):
        sys.stderr.write(text + "\n")
        sys.stderr.flush()
        return   # ggml calls abort() next, as without a callback
    notes = []
    for saver in list(_GUARD.savers):
        try:
            note = saver()
        except Exception as exc:  # noqa: BLE001 - the process is going down; say what was lost
            note = f"could not save the conversation ({exc})"
        if note:
            notes.append(note)
    if _GUARD.connecting is not None:
        line = (f"cannot reach worker ({_GUARD.connecting}): it accepted the connection but did not answer as a "
                "llama.cpp RPC worker of this version. Run `gptoss worker` there, from the same gptoss version")
    else:
        line = lost_message(text, _GUARD.endpoints, notes)
    try:
        sys.stdout.flush()
    except Exception:  # noqa: BLE001 - a closed pipe must not hide the error line
        pass
    from gptoss_cli import ui

    ui.error(line)
    sys.stderr.flush()
    for closer in list(_GUARD.closers):
        try:
            closer(line)
        except Exception:  # noqa: BLE001 - the line is out; exit as promised
            pass
    sys.stderr.flush()
    os._exit(EXIT_FAILED)
