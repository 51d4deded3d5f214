"""`gptoss serve`: check the security rules, load the model into N slots, run uvicorn until a signal."""

from __future__ import annotations

import os
import signal
import socket
from dataclasses import dataclass, field
from pathlib import Path

from converters.errors import BadInputError, RunFailure
from gptoss_cli import paths, ui
from gptoss_cli.engine import harmony
from gptoss_cli.engine.backend import BackendOptions
from gptoss_cli.rpc.endpoints import is_loopback
from gptoss_cli.serve.request import ServeDefaults

KEY_ENV = "GPTOSS_API_KEY"


@dataclass
class ServeOptions:
    """Everything `gptoss serve` was asked for."""

    model: str | None = None
    host: str = "127.0.0.1"
    port: int = 8080
    parallel: int = 4
    queue: int = 16
    api_key_file: Path | None = None
    no_auth: bool = False
    log_requests: bool = False
    fit: bool = False
    rpc: str | None = None          # --rpc HOST:PORT,...: workers that take layers (gptoss worker)
    max_body_mb: float = 8.0
    allow_origins: list[str] = field(default_factory=list)   # --allow-origin: browser origins let in
    defaults: ServeDefaults = field(default_factory=ServeDefaults)
    backend: BackendOptions = field(default_factory=BackendOptions)


class ServeFailure(RunFailure):
    """The server could not start."""

    what = "cannot serve"


def read_key(key_file: Path | None) -> str | None:
    """The API key from --api-key-file, else $GPTOSS_API_KEY, else None (no auth)."""
    if key_file is not None:
        path = Path(key_file).expanduser()
        try:
            key = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise BadInputError(path, f"cannot read the key file: {exc.strerror or exc}") from None
        if not key:
            raise BadInputError(path, "the key file is empty", "Put one line with the key in it")
        return key
    return os.environ.get(KEY_ENV) or None


def allowed_origins(values: list[str]) -> tuple[str, ...]:
    """--allow-origin values as browsers send them; BadInputError for one that is not an origin."""
    from gptoss_cli.serve.edge import normalize_origin

    out = []
    for value in values:
        origin = normalize_origin(value)
        if origin is None:
            raise BadInputError(f"--allow-origin {value}", "not an origin",
                                "Write it as SCHEME://HOST[:PORT] with no path, e.g. http://localhost:3000")
        out.append(origin)
    return tuple(out)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: any free port); one clear error when the address is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ServeFailure(f"{host}:{port}", exc.strerror or str(exc),
                           "Pick another --port, or stop what is listening there") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def run_serve(opts: ServeOptions) -> None:
    """Resolve and load the model, then serve until Ctrl-C or SIGTERM."""
    import uvicorn

    from gptoss_cli.engine.batch import BatchEngine
    from gptoss_cli.serve.app import ServeConfig, create_app
    from gptoss_cli.serve.drain import InFlight, end_all_on_worker_lost

    if opts.defaults.effort not in harmony.EFFORTS:
        raise BadInputError(None, f"unknown effort {opts.defaults.effort!r}", "Use --effort low, medium or high")
    key = read_key(opts.api_key_file)
    loopback = is_loopback(opts.host)
    if not loopback and not key and not opts.no_auth:
        raise BadInputError(None, f"--host {opts.host} reaches beyond this machine and no API key is set",
                            f"Pass --api-key-file FILE (or set {KEY_ENV}), or --no-auth to serve without one")
    origins = allowed_origins(opts.allow_origins)
    if opts.model is None:
        gguf, why = paths.default_gguf()
        ui.info(f"using {gguf} ({why})")
    else:
        gguf = paths.resolve_gguf(opts.model)
    workers = []
    if opts.rpc:
        from gptoss_cli.rpc.client import attach

        workers = attach(opts.rpc, opts.backend)
    if opts.fit:
        _fit(gguf, opts, workers)
    sock = bind(opts.host, opts.port)
    try:
        with ui.status(f"loading {gguf.name} ({opts.parallel} slots)"):
            engine = BatchEngine(gguf, opts.backend, parallel=opts.parallel, queue=opts.queue)
            # JSON-schema answers need llguidance's view of the vocabulary; built now, it never holds up
            # requests in flight (the build holds the interpreter lock).
            engine.backend.grammar_tokenizer()
    except BaseException:
        sock.close()
        raise
    if not opts.defaults.model or opts.defaults.model == "gpt-oss":
        opts.defaults.model = gguf.stem
    config = ServeConfig(opts.defaults, api_key=key, max_body_bytes=int(opts.max_body_mb * 2**20),
                         log_requests=opts.log_requests, loopback=loopback, allow_origins=origins)
    app = InFlight(create_app(engine, config))
    if workers:   # a lost worker ends every request with an error first, then the process exits 1
        end_all_on_worker_lost(engine, app)
    server = _Server(uvicorn.Config(app, log_level="warning", access_log=False,
                                    timeout_graceful_shutdown=5), engine)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    try:
        ui.info(f"{opts.parallel} slots of {engine.n_ctx_seq} tokens; auth {'on' if key else 'off'}; Ctrl-C stops")
        if not key and not loopback:
            ui.warn(f"serving {opts.host} without an API key (--no-auth): anyone who reaches this port can use it")
        print(f"http://{shown}:{port}/v1", flush=True)
        server.run(sockets=[sock])
    finally:
        engine.close()
        sock.close()
    if server.signalled == signal.SIGINT:
        raise KeyboardInterrupt   # exit 130; SIGTERM is the ordinary way to stop a service: exit 0


class _Server:
    """uvicorn's Server, with a shutdown signal that first ends every open generation."""

    def __init__(self, config, engine) -> None:
        import uvicorn

        outer = self

        class Server(uvicorn.Server):
            def handle_exit(self, sig, frame) -> None:
                outer.signalled = outer.signalled or sig
                engine.stop()
                super().handle_exit(sig, frame)

            def capture_signals(self):   # keep the signals: run_serve reports them once the model is freed
                import contextlib
                import signal

                @contextlib.contextmanager
                def capture():
                    old = {s: signal.signal(s, self.handle_exit) for s in (signal.SIGINT, signal.SIGTERM)}
                    try:
                        yield
                    finally:
                        for s, handler in old.items():
                            signal.signal(s, handler)
                return capture()

        self.signalled = 0
        self._server = Server(config)

    def run(self, sockets) -> None:
        """Serve until a signal."""
        self._server.run(sockets=sockets)


def _fit(gguf: Path, opts: ServeOptions, workers: list) -> None:
    """--fit: --n-cpu-moe from free memory, for the KV cache of every slot."""
    from gptoss_cli.memory.planning import fit_backend

    fit_backend(gguf, opts.backend, workers, parallel=opts.parallel)
