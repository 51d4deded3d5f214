"""Running a model: chat, serve, plan, worker."""

from __future__ import annotations

from pathlib import Path

import typer

from gptoss_cli.commands.options import (
    CpuMoe,
    FlashAttn,
    FlashAttnOpt,
    GgufModel,
    GpuLayers,
    JsonOut,
    NCpuMoe,
    Rpc,
    Threads,
)
from gptoss_cli.completion import complete_gguf_model
from gptoss_cli.errors import run_guarded

CHAT_EXIT_CODES = """Exit codes: 0 answered; 1 the model failed to load or run, or gave no answer; 2 bad input
(no such model, not a gpt-oss GGUF, empty prompt, bad option); 130 interrupted."""
SERVE_EXIT_CODES = """Exit codes: 0 stopped by SIGTERM; 1 the model failed to load or the port is taken; 2 bad input
(no such model, bad option, a non-loopback --host without a key or --no-auth, unreadable key file); 130 Ctrl-C."""
PLAN_EXIT_CODES = """Exit codes: 0 it fits (the plan and a `gptoss chat` command are printed); 1 it does not fit;
2 bad input (no such model, bad size)."""
WORKER_EXIT_CODES = """Exit codes: 1 the server could not start (port in use, no RPC backend); 2 bad input (a
non-loopback --host without --allow-remote, unknown --device); 130 stopped with Ctrl-C."""


def chat(
    model: GgufModel = None,
    effort: str = typer.Option("medium", "--effort", "-e", help="Reasoning effort: low, medium or high."),
    show_thinking: bool = typer.Option(False, "--show-thinking", help="Show the model's thinking (dimmed)."),
    system: str = typer.Option("", "--system", "-s", help="Instructions for the model (the developer message)."),
    prompt: str | None = typer.Option(None, "--prompt", "-p",
                                         help="Answer this one prompt and exit (`-` reads stdin)."),
    json_out: bool = typer.Option(False, "--json", help="One-shot: print one JSON document (answer, thinking, "
                                                         "stop reason, tokens, timings)."),
    temperature: float = typer.Option(1.0, "--temperature", min=0.0, help="Sampling temperature (0 = greedy)."),
    top_p: float = typer.Option(1.0, "--top-p", min=0.0, max=1.0, help="Nucleus sampling threshold."),
    seed: int = typer.Option(-1, "--seed", help="Sampling seed (-1: random)."),
    max_tokens: int | None = typer.Option(None, "--max-tokens", min=1,
                                             help="Most tokens per reply, thinking included (default: the context)."),
    ctx_size: int = typer.Option(8192, "--ctx-size", "-c", min=64, help="Context size in tokens."),
    threads: Threads = None,
    gpu_layers: GpuLayers = -1,
    flash_attn: FlashAttnOpt = FlashAttn.auto,
    cpu_moe: CpuMoe = False,
    n_cpu_moe: NCpuMoe = 0,
    fit: bool = typer.Option(False, "--fit", help="Choose --n-cpu-moe from free memory; prints the plan."),
    rpc: Rpc = None,
    mcp: list[str] = typer.Option([], "--mcp", help='An MCP server: "COMMAND ARGS" (stdio) or an https://…/mcp '
                                  "URL (streamable HTTP). Repeatable."),
    mcp_env: list[str] = typer.Option([], "--mcp-env", help="Pass this environment variable (KEY, or KEY=VALUE) "
                                      "to the MCP servers; they get a minimal environment otherwise. Repeatable."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Run every tool call without asking."),
    allow_tool: list[str] = typer.Option([], "--allow-tool", help="Run this tool without asking (repeatable); "
                                         "one-shot runs call only --yes or --allow-tool tools."),
    max_tool_calls: int = typer.Option(16, "--max-tool-calls", min=0, help="Most tool calls per reply."),
    schema: str | None = typer.Option(None, "--schema", help="The answer is JSON valid for this schema "
                                         "(a file, or inline JSON)."),
    thinking_budget: int | None = typer.Option(None, "--thinking-budget", min=0,
                                                  help="At most N thinking tokens; then the answer is opened."),
    tool_choice: str = typer.Option("auto", "--tool-choice", help="auto, none, or a tool NAME that the first "
                                    "call of each reply must be."),
) -> None:
    """Chat with a gpt-oss GGUF on llama.cpp; one-shot with -p or piped stdin.

    Examples:

        gptoss chat 20b --effort high --show-thinking --system "Answer in French."

        gptoss chat 120b --n-cpu-moe 20        # experts of layers 0-19 in RAM

        echo "2+2?" | gptoss chat 20b --json   # one-shot; -p "TEXT" works too

        gptoss chat 120b --rpc 10.0.0.2:50052  # layers shared with a `gptoss worker` on 10.0.0.2

        gptoss chat 20b --mcp "npx -y @modelcontextprotocol/server-filesystem ~/notes"   # asks before each call

        gptoss chat 20b -p "Ann is 31." --schema person.json --json | jq -r .final
    """
    from gptoss_cli.chat.command import ChatOptions, run_chat
    from gptoss_cli.chat.tooling import ToolOptions
    from gptoss_cli.engine.backend import BackendOptions
    from gptoss_cli.engine.session import Sampling

    opts = ChatOptions(
        model=model, effort=effort.lower(), show_thinking=show_thinking, system=system, prompt=prompt,
        json_out=json_out, fit=fit, rpc=rpc, sampling=Sampling(temperature, top_p, max_tokens),
        backend=BackendOptions(ctx_size=ctx_size, threads=threads, gpu_layers=gpu_layers,
                               flash_attn=flash_attn.value, cpu_moe=cpu_moe, n_cpu_moe=n_cpu_moe, seed=seed))
    opts.tools = ToolOptions(mcp=mcp, mcp_env=mcp_env, yes=yes, allow_tool=allow_tool,
                             max_tool_calls=max_tool_calls, schema=schema, thinking_budget=thinking_budget,
                             tool_choice=tool_choice)
    run_guarded(lambda: run_chat(opts))


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
    from gptoss_cli.serve.plan import Defaults
    from gptoss_cli.serve.server import ServeOptions, run_serve

    opts = ServeOptions(
        model=model, host=host, port=port, parallel=parallel, queue=queue, api_key_file=api_key_file,
        no_auth=no_auth, log_requests=log_requests, fit=fit, rpc=rpc, allow_origins=allow_origin,
        defaults=Defaults(effort=effort.lower(), thinking_budget=thinking_budget, max_tokens=max_tokens),
        backend=BackendOptions(ctx_size=ctx_size, threads=threads, gpu_layers=gpu_layers,
                               flash_attn=flash_attn.value, cpu_moe=cpu_moe, n_cpu_moe=n_cpu_moe, seed=seed))
    run_guarded(lambda: run_serve(opts))


def plan(
    model: str | None = typer.Argument(None, autocompletion=complete_gguf_model,
                                         help="A .gguf, a snapshot folder, 20b/120b or a repo id "
                                              "(default: the last GGUF written)."),
    ctx_size: int = typer.Option(8192, "--ctx-size", "--ctx", "-c", min=1, help="Context size in tokens."),
    vram: str | None = typer.Option(None, "--vram", help="GPU memory to plan for, e.g. 24GB (default: free "
                                                           "memory of this machine's GPUs; 0: CPU only)."),
    ram: str | None = typer.Option(None, "--ram", help="System RAM to plan for (default: available RAM)."),
    flash_attn: FlashAttn = typer.Option("auto", "--flash-attn", "-fa", help="Flash attention as chat will run it: "
                                         "auto and on plan its much smaller compute buffer."),
    json_out: JsonOut = False,
    rpc: str | None = typer.Option(None, "--rpc", help="Plan for these `gptoss worker`s: "
                                                          "HOST:PORT[,HOST:PORT...]."),
    keep: int | None = typer.Option(None, "--keep", help="Plan for the model pruned to N experts per layer "
                                                            "(`gptoss prune --keep N`)."),
) -> None:
    """Plan memory without loading anything: what goes on the GPU, what stays in RAM, the --n-cpu-moe to use.

    Sizes are binary: 24GB means 24 GiB, as GPU memory is counted.

    Examples:

        gptoss plan 120b --vram 24GB --ctx 32768

        gptoss plan 20b --vram 8GB --flash-attn off

        gptoss plan gpt-oss-120b-mxfp4.gguf --json | jq .n_cpu_moe

        gptoss plan 120b --rpc 10.0.0.2:50052,10.0.0.3:50052   # asks each worker for its memory

        gptoss plan 120b --keep 64 --vram 24GB       # after `gptoss prune 120b --keep 64`
    """
    from gptoss_cli.memory.planning import run_plan

    run_guarded(lambda: run_plan(model, ctx_size, vram, ram, flash_attn.value, json_out, rpc, keep))


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
