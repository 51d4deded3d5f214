"""`--rpc`: register workers as llama.cpp devices, as llama.cpp's own tools do (common/arg.cpp add_rpc_devices).

Each endpoint goes through the RPC backend's `ggml_backend_rpc_add_server` (found with
`ggml_backend_reg_get_proc_address`), and the backend it returns is registered with ggml; its devices
then take layers like local GPUs, the split following each device's free memory (llama-cli --rpc).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from converters.errors import RunFailure
from gptoss_cli.engine import ggml
from gptoss_cli.rpc import faults, keepalive
from gptoss_cli.rpc.endpoints import Endpoint, parse_endpoints, probe

HANDSHAKE_TIMEOUT_S = 30.0
_REGISTERED: dict[Endpoint, Worker] = {}


class NoRpcBackend(RunFailure):
    """This llama.cpp was built without ggml's RPC backend."""

    what = "no RPC backend"


class WorkerUnreachable(RunFailure):
    """A worker does not answer when the command starts."""

    what = "cannot reach worker"


@dataclass(frozen=True)
class Worker:
    """A connected worker and its devices (llama.cpp device handles)."""

    endpoint: Endpoint
    devices: tuple[int, ...]

    def memory(self) -> list[tuple[str, int, int]]:
        """(device name, free bytes, total bytes) per device, asked of the worker now."""
        g = ggml.lib()
        return [(g.dev_name(d).decode(), *ggml.device_memory(d)) for d in self.devices]


def rpc_add_server():
    """ggml_backend_rpc_add_server; NoRpcBackend when this build lacks the RPC backend."""
    add = ggml.rpc_proc("ggml_backend_rpc_add_server", ggml.RPC_ADD_SERVER)
    if add is None:
        raise NoRpcBackend(None, "this llama-cpp-python was built without ggml's RPC backend",
                           "Reinstall it with `make install`, or CMAKE_ARGS=\"-DGGML_RPC=ON\" pip install "
                           "--force-reinstall --no-cache-dir llama-cpp-python")
    return add


def connect(spec: str | list[Endpoint]) -> list[Worker]:
    """Connect to every worker of `--rpc HOST:PORT,...` and register its devices; WorkerUnreachable names
    the first that does not answer."""
    endpoints = parse_endpoints(spec) if isinstance(spec, str) else spec
    add = rpc_add_server()
    faults.guard(endpoints)
    keepalive.watch(endpoints)   # a worker whose host vanishes mid-run must not hang us in recv()
    return [_connect_one(add, e) for e in endpoints]


def _connect_one(add, endpoint: Endpoint) -> Worker:
    if endpoint in _REGISTERED:
        return _REGISTERED[endpoint]
    why = probe(endpoint)
    if why is not None:
        raise WorkerUnreachable(str(endpoint), why, f"Start `gptoss worker --host {endpoint.host} --port "
                                f"{endpoint.port}` there (--allow-remote for a non-loopback address), or "
                                "check the address and the firewall")
    # ggml's handshake blocks while the worker serves another client (one at a time): bound the wait.
    found: list[int] = []
    t = threading.Thread(target=lambda: found.append(add(str(endpoint).encode()) or 0), daemon=True)
    faults.connecting(endpoint)
    t.start()
    t.join(HANDSHAKE_TIMEOUT_S)
    faults.connecting(None)
    if t.is_alive():
        raise WorkerUnreachable(str(endpoint), f"it accepted the connection but did not answer within "
                                f"{HANDSHAKE_TIMEOUT_S:g} s", "A worker serves one client at a time: stop the "
                                "other one using it, or start another worker")
    reg = found[0] if found else 0
    if not reg:
        raise WorkerUnreachable(str(endpoint), "the worker offers no device", "Restart `gptoss worker` there")
    g = ggml.lib()
    g.register(reg)
    worker = Worker(endpoint, tuple(g.reg_dev_get(reg, i) for i in range(g.reg_dev_count(reg))))
    _REGISTERED[endpoint] = worker
    return worker


def offload_devices(workers: list[Worker]) -> tuple[int, ...]:
    """The devices layers are spread over: the workers' first, as llama.cpp orders them, then local GPUs."""
    g = ggml.lib()
    remote = [d for w in workers for d in w.devices]
    local = [d for d in ggml.devices() if g.dev_type(d) in (ggml.DEV_GPU, ggml.DEV_IGPU)
             and d not in remote and g.reg_name(g.dev_backend_reg(d)) != b"RPC"]
    return tuple(remote + local)


def offload_table(workers: list[Worker]) -> list[tuple[str, int]]:
    """(name, free bytes) of each device of offload_devices, in its order: `RPC0 (10.0.0.2:50052)`,
    `CUDA0 (local)`; the workers are asked for their memory now."""
    g = ggml.lib()
    remote = {d: str(w.endpoint) for w in workers for d in w.devices}
    return [(f"{g.dev_name(d).decode()} ({remote.get(d, 'local')})", ggml.device_memory(d)[0])
            for d in offload_devices(workers)]


def attach(rpc: str, backend_opts) -> list[Worker]:
    """--rpc for a command that loads a model: connect the workers, hand their devices (then the local
    GPUs) to the loader through engine BackendOptions, and say what each offers."""
    from gptoss_cli import ui

    with ui.status("connecting to workers"):
        workers = connect(rpc)
    backend_opts.devices = offload_devices(workers)
    ui.info("workers: " + ", ".join(f"{w.endpoint} ({name} {free / 2**30:.1f} GiB free)"
                                    for w in workers for name, free, _ in w.memory()))
    return workers
