"""`gptoss serve`: its options; the body is serve/server.py."""

from __future__ import annotations

from pathlib import Path

import typer

from gptoss_cli.commands.options import CpuMoe, FlashAttn, FlashAttnOpt, GgufModel, GpuLayers, NCpuMoe, Rpc, Threads
from gptoss_cli.errors import run_guarded

SERVE_EXIT_CODES = """Exit codes: 0 stopped by SIGTERM; 1 the model failed to load or the port is taken; 2 bad input
(no such model, bad option, a non-loopback --host without a key or --no-auth, unreadable key file); 130 Ctrl-C."""


def serve(
    model: GgufModel = None,
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; beyond loopback needs a key or --no-auth."),
    port: int = typer.Option(8080, "--port", min=0, max=65535, help="Port (0: any free port; the URL is printed)."),
    parallel: int = typer.Option(4, "--parallel", "-np", min=1, max=64, help="Requests decoded together (slots)."),
    queue: int = typer.Option(16, "--queue", min=0, help="Requests that may wait for a slot; beyond: HTTP 429."),
    api_key_file: Path | None = typer.Option(None, "--api-key-file", help="File holding the API key every /v1 "
                                             "request must send (also: $GPTOSS_API_KEY; never on the command line)."),
    no_auth: bool = typer.Option(False, "--no-auth", help="Serve a non-loopback --host without a key."),
    allow_origin: list[str] = typer.Option([], "--allow-origin", help="A web page origin (SCHEME://HOST[:PORT]) "
                                           "whose browser requests are served, with CORS; others get 403. "
                                           "Repeatable; '*' lets every page in."),
    log_requests: bool = typer.Option(False, "--log-requests", help="Log request bodies to stderr."),
    effort: str = typer.Option("medium", "--effort", "-e", help="Default reasoning effort: low, medium or high."),
    thinking_budget: int | None = typer.Option(None, "--thinking-budget", min=0,
                                                  help="Default most thinking tokens per reply (request field "
                                                       "thinking_budget overrides)."),
    max_tokens: int | None = typer.Option(None, "--max-tokens", min=1,
                                             help="Default most tokens per reply (default: the slot's context)."),
    ctx_size: int = typer.Option(8192, "--ctx-size", "-c", min=64, help="Context size of each slot, in tokens."),
    threads: Threads = None,
    gpu_layers: GpuLayers = -1,
    flash_attn: FlashAttnOpt = FlashAttn.auto,
    cpu_moe: CpuMoe = False,
    n_cpu_moe: NCpuMoe = 0,
    fit: bool = typer.Option(False, "--fit", help="Choose --n-cpu-moe from free memory for all slots' context."),
    rpc: Rpc = None,
    seed: int = typer.Option(-1, "--seed", help="Default sampling seed (-1: random; request field seed overrides)."),
) -> None:
    """Serve a gpt-oss GGUF over an OpenAI-compatible API (chat completions, Responses), requests in parallel.

    Examples:

        gptoss serve 20b                      # prints http://127.0.0.1:8080/v1 when ready

        gptoss serve 120b --fit --parallel 4 --api-key-file ~/.config/gptoss/key

        gptoss serve 20b --allow-origin http://localhost:3000   # a web UI on that origin may call it

        curl -s 127.0.0.1:8080/v1/chat/completions --json '{"messages":[{"role":"user","content":"hi"}]}'

    Bound to loopback (the default) it answers only Host: 127.0.0.1, localhost or [::1]; browser requests
    (an Origin header) only from --allow-origin; bodies only as Content-Type: application/json.
    """
    from gptoss_cli.engine.backend import BackendOptions
    from gptoss_cli.serve.request import ServeDefaults
    from gptoss_cli.serve.server import ServeOptions, run_serve

    opts = ServeOptions(
        model=model, host=host, port=port, parallel=parallel, queue=queue, api_key_file=api_key_file,
        no_auth=no_auth, log_requests=log_requests, fit=fit, rpc=rpc, allow_origins=allow_origin,
        defaults=ServeDefaults(effort=effort.lower(), thinking_budget=thinking_budget, max_tokens=max_tokens),
        backend=BackendOptions(ctx_size=ctx_size, threads=threads, gpu_layers=gpu_layers,
                               flash_attn=flash_attn.value, cpu_moe=cpu_moe, n_cpu_moe=n_cpu_moe, seed=seed))
    run_guarded(lambda: run_serve(opts))
