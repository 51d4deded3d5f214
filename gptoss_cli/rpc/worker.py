"""`gptoss worker`: llama.cpp's RPC server in this process, exposing one of this machine's devices.

The server is ggml's own (`ggml_backend_rpc_start_server`, reached through the RPC backend's
get_proc_address): it accepts one client at a time and runs whatever graphs the client sends. Its protocol
has no authentication and no encryption, so it listens on loopback unless --allow-remote says otherwise.
"""

from __future__ import annotations

import ctypes
import os
import socket
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from converters.errors import BadInputError, RunFailure
from gptoss_cli.engine import ggml
from gptoss_cli.rpc.client import NoRpcBackend
from gptoss_cli.rpc.endpoints import Endpoint, is_loopback

EXIT_INTERRUPTED = 130
SECURITY_NOTE = ("the RPC protocol has no authentication or encryption: anyone who reaches this port can run "
                 "code on this device and read what it holds. Use it on a trusted network, a VPN or an SSH "
                 "tunnel")


@dataclass
class WorkerOptions:
    """What `gptoss worker` was asked for."""

    host: str = "127.0.0.1"
    port: int = 50052
    device: str | None = None       # ggml device name (CPU, CUDA0, MTL0); None: the best one
    cache: Path | None = None       # where received weights are kept for the next load
    threads: int | None = None
    allow_remote: bool = False
    verbose: bool = False


class WorkerFailure(RunFailure):
    """The RPC server could not start or stopped."""

    what = "worker failed"


class RemoteRefused(BadInputError):
    """A non-loopback --host without --allow-remote."""

    what = "refusing to listen"


def check_host(opts: WorkerOptions) -> None:
    """RemoteRefused for a non-loopback --host without --allow-remote."""
    if ":" in opts.host:
        raise BadInputError(f"--host {opts.host}", "llama.cpp's RPC server takes no IPv6 address",
                            "Use an IPv4 address or a host name")
    if not is_loopback(opts.host) and not opts.allow_remote:
        raise RemoteRefused(f"--host {opts.host}", "it is not a loopback address, and the RPC protocol has no "
                            "authentication or encryption", "Pass --allow-remote on a trusted network or VPN, "
                            "or keep 127.0.0.1 and tunnel: ssh -L 50052:127.0.0.1:50052 THIS-HOST")


def pick_device(name: str | None) -> int:
    """The device to serve: --device by name, else the GPU with the most free memory, else the CPU."""
    g = ggml.lib()
    devs = [d for d in ggml.devices() if g.reg_name(g.dev_backend_reg(d)) != b"RPC"]
    names = {g.dev_name(d).decode(): d for d in devs}
    if name is not None:
        if name not in names:
            raise BadInputError(f"--device {name}", "no such device here", f"Use one of: {', '.join(names)}")
        return names[name]
    gpus = [d for d in devs if g.dev_type(d) in (ggml.DEV_GPU, ggml.DEV_IGPU)]
    return max(gpus, key=lambda d: ggml.device_memory(d)[0]) if gpus else ggml.cpu_device()


def check_port_free(endpoint: Endpoint) -> None:
    """WorkerFailure when host:port cannot be listened on (in use, not an address of this machine)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as ggml's server socket does
            s.bind((endpoint.host, endpoint.port))
    except OSError as exc:
        raise WorkerFailure(str(endpoint), f"cannot listen there ({(exc.strerror or str(exc)).lower()})",
                            "Pick another --port, or a --host that is an address of this machine") from None


def describe(dev: int) -> str:
    """`CPU (AMD EPYC 7B13), 20.1 GiB free of 23.5 GiB`."""
    g = ggml.lib()
    free, total = ggml.device_memory(dev)
    return (f"{g.dev_name(dev).decode()} ({g.dev_description(dev).decode().strip()}), "
            f"{free / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB")


def run_worker(opts: WorkerOptions) -> None:
    """Serve a device over llama.cpp's RPC protocol until Ctrl-C."""
    from gptoss_cli import ui
    from gptoss_cli.engine.llama_log import llama_log
    from gptoss_cli.engine.threads import math_threads

    check_host(opts)
    endpoint = Endpoint(opts.host, opts.port)
    start = ggml.rpc_proc("ggml_backend_rpc_start_server", ggml.RPC_START_SERVER)
    if start is None:
        raise NoRpcBackend(None, "this llama-cpp-python was built without ggml's RPC backend",
                           "Reinstall it with `make install`")
    dev = pick_device(opts.device)
    check_port_free(endpoint)
    cache = None
    if opts.cache is not None:
        opts.cache.mkdir(parents=True, exist_ok=True)
        cache = str(opts.cache.resolve()).encode()
    llama_log().verbose = opts.verbose
    threads = opts.threads or math_threads()
    if not is_loopback(opts.host):
        ui.warn(f"listening on {opts.host}: {SECURITY_NOTE}.")
    devices = (ctypes.c_void_p * 1)(dev)
    server = threading.Thread(target=start, args=(str(endpoint).encode(), cache, threads, 1, devices),
                              daemon=True, name="rpc-server")
    print(f"gptoss worker on {endpoint}: {describe(dev)}", flush=True)
    reach = endpoint if opts.host != "0.0.0.0" else f"THIS-MACHINE'S-ADDRESS:{opts.port}"
    ui.info(f"{threads} threads; cache {opts.cache or 'off'}; connect with `gptoss chat MODEL --rpc {reach}`; "
            "Ctrl-C stops")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())   # ggml's server logs with printf: keep stdout the result
    server.start()
    try:
        while server.is_alive():
            server.join(0.5)
    except KeyboardInterrupt:
        ui.info("worker stopped")
        sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)   # the server thread is blocked in accept(); no clean way to join it
    raise WorkerFailure(str(endpoint), "llama.cpp's RPC server stopped (see its message above)",
                        "Check --host, --port and --device")
