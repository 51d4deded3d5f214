"""`gptoss worker`: its options; the body is rpc/worker.py."""

from __future__ import annotations

from pathlib import Path

import typer

from gptoss_cli.commands.options import Threads
from gptoss_cli.errors import run_guarded

WORKER_EXIT_CODES = """Exit codes: 1 the server could not start (port in use, no RPC backend); 2 bad input (a
non-loopback --host without --allow-remote, unknown --device); 130 stopped with Ctrl-C."""


def worker(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on. Anything but loopback needs "
                                                         "--allow-remote."),
    port: int = typer.Option(50052, "--port", "-p", min=1, max=65535, help="TCP port."),
    device: str | None = typer.Option(None, "--device", "-d", help="llama.cpp device to serve, e.g. CPU or "
                                         "CUDA0 (default: the GPU with the most free memory, else CPU)."),
    cache: Path | None = typer.Option(None, "--cache", help="Keep received weights in this folder: the next "
                                                               "load of the same model skips the network."),
    threads: Threads = None,
    allow_remote: bool = typer.Option(False, "--allow-remote", help="Listen on a non-loopback address. The "
                                      "protocol has no authentication or encryption: trusted networks only."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Echo llama.cpp's log."),
) -> None:
    """Lend this machine's GPU or RAM to `gptoss chat/serve/plan/eval --rpc` elsewhere (llama.cpp's RPC server).

    Examples:

        gptoss worker                                   # 127.0.0.1:50052; reach it through an SSH tunnel

        gptoss worker --host 10.0.0.2 --allow-remote --cache ~/.cache/gptoss-rpc

        gptoss worker --device CUDA0 --port 50053
    """
    from gptoss_cli.rpc.worker import WorkerOptions, run_worker

    opts = WorkerOptions(host=host, port=port, device=device, cache=cache, threads=threads,
                         allow_remote=allow_remote, verbose=verbose)
    run_guarded(lambda: run_worker(opts))
