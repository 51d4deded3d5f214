"""The Typer app: parse arguments, call the command module, render. No logic lives here."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Optional

import typer

from gptoss_cli import __version__
from gptoss_cli.completion import complete_gguf_model, complete_recipe, complete_snapshot_model
from gptoss_cli.errors import run_guarded

app = typer.Typer(
    name="gptoss",
    help="gpt-oss from Hugging Face to a chat in your terminal: pull, quantize, chat.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion; see gptoss_cli/completion.py
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)


class FlashAttn(str, Enum):
    """llama.cpp's --flash-attn values."""

    auto = "auto"
    on = "on"
    off = "off"


def _version(value: bool) -> None:
    if value:
        typer.echo(f"gptoss {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="Print the version and exit.")) -> None:
    """gpt-oss from Hugging Face to a chat in your terminal.

    Typical session: `gptoss pull 20b && gptoss quantize && gptoss chat`.
    """


# --- pull / list / rm ----------------------------------------------------------------------------------

PULL_EXIT_CODES = """Exit codes: 0 pulled or up to date; 1 network, server or checksum failure (rerun resumes);
2 bad input (unknown, gated or unauthorised repo, bad revision, not gpt-oss, unsafe file names, not
enough disk); 130 interrupted (finished bytes are kept; rerun resumes)."""


@app.command(epilog=PULL_EXIT_CODES)
def pull(
    model: str = typer.Argument(..., autocompletion=complete_snapshot_model,
                                help="20b, 120b, or a Hugging Face repo id of a gpt-oss model."),
    revision: Optional[str] = typer.Option(None, "--revision", help="Branch, tag or commit sha (default: main)."),
    local_dir: Optional[Path] = typer.Option(None, "--dir", help="Put the files in this folder instead of the HF cache."),
    token: Optional[str] = typer.Option(None, "--token", help="Hugging Face token (default: $HF_TOKEN or `hf auth login`).",
                                        show_default=False),
    quantize: bool = typer.Option(False, "--quantize", help="Then run `gptoss quantize` with the default recipe."),
    no_verify: bool = typer.Option(False, "--no-verify", help="Skip the sha256 check of downloaded files."),
    workers: int = typer.Option(8, "--max-workers", min=1, max=32, help="Files downloaded in parallel."),
    json_out: bool = typer.Option(False, "--json", help="Print the plan and the result as one JSON document."),
) -> None:
    """Download the files a GGUF converter needs (never original/ or metal/); resumable and sha256-checked.

    Examples:

        gptoss pull 20b

        gptoss pull 120b --revision 8b193b0 --dir /data/gpt-oss-120b

        gptoss pull 20b --quantize && gptoss chat
    """
    from gptoss_cli.hub.pull import run_pull

    run_guarded(lambda: run_pull(model, revision, local_dir, token, quantize, not no_verify, json_out, workers))


@app.command("list")
def list_models(json_out: bool = typer.Option(False, "--json", help="Print one JSON document.")) -> None:
    """List local gpt-oss snapshots and GGUF files: name, revision, size, path.

    Examples:

        gptoss list

        gptoss list --json | jq '.models[].path'
    """
    from gptoss_cli.hub.library import run_list

    run_guarded(lambda: run_list(json_out))


@app.command()
def rm(
    model: str = typer.Argument(..., autocompletion=complete_snapshot_model,
                                help="20b, 120b, a repo id, a --dir folder or a .gguf path."),
    gguf_only: bool = typer.Option(False, "--gguf-only", help="Keep the downloaded snapshot; delete only GGUFs."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Delete a model's downloaded snapshot and GGUF files, after confirmation.

    Examples:

        gptoss rm 20b

        gptoss rm 120b --gguf-only --yes
    """
    from gptoss_cli.hub.library import run_rm

    run_guarded(lambda: run_rm(model, gguf_only, yes, json_out))


# --- quantize / info (converter) ---------------------------------------------------------------

QUANTIZE_EXIT_CODES = """Exit codes: 0 written (or planned with --dry-run); 1 llama.cpp's quantizer failed; 2 bad input
(unknown recipe or type, bad --tensor-type regex, missing imatrix, target too small, output exists, not
enough disk); 130 interrupted (nothing half-written is left)."""


@app.command(epilog=QUANTIZE_EXIT_CODES)
def quantize(
    model: Optional[str] = typer.Argument(None, autocompletion=complete_snapshot_model,
                                         help="Snapshot folder, 20b/120b or a repo id "
                                              "(default: the last `gptoss pull`)."),
    recipe: str = typer.Option("mxfp4", "--recipe", "-r", autocompletion=complete_recipe,
                               help="mxfp4 (default), f16, bf16, q8, experts-q4, experts-q3, experts-q2; "
                                    "see `gptoss recipes`."),
    output: list[str] = typer.Option([], "--output", "-o",
                                     help="Output .gguf (default: $GPTOSS_HOME/models/REPO-NAME-RECIPE.gguf). "
                                          "A type name (`--output q8_0`) sets output.weight's type instead."),
    experts: Optional[str] = typer.Option(None, "--experts", help="Type of all expert tensors (e.g. q4_k, mxfp4)."),
    attn: Optional[str] = typer.Option(None, "--attn", help="Type of attention q/k/v/o (e.g. q8_0)."),
    embed: Optional[str] = typer.Option(None, "--embed", help="Type of the token embeddings (e.g. q6_k)."),
    output_type: Optional[str] = typer.Option(None, "--output-type", help="Type of output.weight (e.g. q8_0)."),
    tensor_type: list[str] = typer.Option([], "--tensor-type", help="REGEX=TYPE on GGUF tensor names; repeatable, "
                                                                     "the last matching rule wins."),
    imatrix: Optional[Path] = typer.Option(None, "--imatrix", help="Importance matrix (from `gptoss imatrix` or "
                                                                   "llama-imatrix); needed by experts-q3/q2."),
    target_size: Optional[str] = typer.Option(None, "--target-size", help="Choose per-layer expert types to fit "
                                                                          "this size, e.g. 48GB (binary: GiB)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print per-class sizes and the exact file size; "
                                                          "write nothing."),
    threads: Optional[int] = typer.Option(None, "--threads", "-t", min=1, help="Quantizer threads (default: all)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output file."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as one JSON document."),
) -> None:
    """Convert gpt-oss safetensors to GGUF; experts stay bit-exact MXFP4 unless a recipe says otherwise.

    Examples:

        gptoss quantize 20b                               # mxfp4: experts as shipped, the rest Q8_0

        gptoss quantize 120b --recipe experts-q3 --imatrix gpt-oss-120b.imatrix.gguf --dry-run

        gptoss quantize 20b --experts q4_k --attn q8_0 --embed q6_k --tensor-type 'blk\\.0\\..*_exps=mxfp4'
    """
    from gptoss_cli.quant.quantize import QuantizeOptions, run_quantize, split_output

    out_path, out_type = split_output(output, output_type)
    opts = QuantizeOptions(model=model, recipe=recipe, output=out_path, force=force, as_json=json_out,
                           experts=experts, attn=attn, embed=embed, output_type=out_type,
                           tensor_types=tuple(tensor_type), imatrix=imatrix, target_size=target_size,
                           dry_run=dry_run, threads=threads)
    run_guarded(lambda: run_quantize(opts))


@app.command()
def info(
    model: Optional[str] = typer.Argument(None, autocompletion=complete_gguf_model,
                                         help="A .gguf path or 20b/120b (default: the last GGUF written)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Show a GGUF's metadata and its tensor classes x types x bytes.

    Examples:

        gptoss info gpt-oss-20b-mxfp4.gguf

        gptoss info 20b --json | jq .classes
    """
    from gptoss_cli.quant.info import run_info

    run_guarded(lambda: run_info(model, json_out))


# --- chat / plan -----------------------------------------------------------------------------------

CHAT_EXIT_CODES = """Exit codes: 0 answered; 1 the model failed to load or run, or gave no answer; 2 bad input
(no such model, not a gpt-oss GGUF, empty prompt, bad option); 130 interrupted."""


@app.command(epilog=CHAT_EXIT_CODES)
def chat(
    model: Optional[str] = typer.Argument(None, autocompletion=complete_gguf_model,
                                         help="A .gguf path or 20b/120b (default: the last GGUF written)."),
    effort: str = typer.Option("medium", "--effort", "-e", help="Reasoning effort: low, medium or high."),
    show_thinking: bool = typer.Option(False, "--show-thinking", help="Show the model's thinking (dimmed)."),
    system: str = typer.Option("", "--system", "-s", help="Instructions for the model (the developer message)."),
    prompt: Optional[str] = typer.Option(None, "--prompt", "-p",
                                         help="Answer this one prompt and exit (`-` reads stdin)."),
    json_out: bool = typer.Option(False, "--json", help="One-shot: print one JSON document (answer, thinking, "
                                                         "stop reason, tokens, timings)."),
    temperature: float = typer.Option(1.0, "--temperature", min=0.0, help="Sampling temperature (0 = greedy)."),
    top_p: float = typer.Option(1.0, "--top-p", min=0.0, max=1.0, help="Nucleus sampling threshold."),
    seed: int = typer.Option(-1, "--seed", help="Sampling seed (-1: random)."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", min=1,
                                             help="Most tokens per reply, thinking included (default: the context)."),
    ctx_size: int = typer.Option(8192, "--ctx-size", "-c", min=64, help="Context size in tokens."),
    threads: Optional[int] = typer.Option(None, "--threads", "-t", min=1, help="CPU threads (default: auto)."),
    gpu_layers: int = typer.Option(-1, "--gpu-layers", "-ngl", help="Layers on the GPU (-1: all, when there is one)."),
    flash_attn: FlashAttn = typer.Option("auto", "--flash-attn", "-fa", help="Flash attention: auto (llama.cpp "
                                         "turns it on where the backend supports it), on or off."),
    cpu_moe: bool = typer.Option(False, "--cpu-moe", help="Keep all expert weights in system RAM."),
    n_cpu_moe: int = typer.Option(0, "--n-cpu-moe", min=0, help="Keep the experts of the first N layers in RAM."),
    fit: bool = typer.Option(False, "--fit", help="Choose --n-cpu-moe from free memory; prints the plan."),
    rpc: Optional[str] = typer.Option(None, "--rpc", help="Spread the layers over these `gptoss worker`s: "
                                                          "HOST:PORT[,HOST:PORT...]."),
    mcp: list[str] = typer.Option([], "--mcp", help='An MCP server: "COMMAND ARGS" (stdio) or an https://…/mcp '
                                  "URL (streamable HTTP). Repeatable."),
    mcp_env: list[str] = typer.Option([], "--mcp-env", help="Pass this environment variable (KEY, or KEY=VALUE) "
                                      "to the MCP servers; they get a minimal environment otherwise. Repeatable."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Run every tool call without asking."),
    allow_tool: list[str] = typer.Option([], "--allow-tool", help="Run this tool without asking (repeatable); "
                                         "one-shot runs call only --yes or --allow-tool tools."),
    max_tool_calls: int = typer.Option(16, "--max-tool-calls", min=0, help="Most tool calls per reply."),
    schema: Optional[str] = typer.Option(None, "--schema", help="The answer is JSON valid for this schema "
                                         "(a file, or inline JSON)."),
    thinking_budget: Optional[int] = typer.Option(None, "--thinking-budget", min=0,
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
    from gptoss_cli.engine.backend import BackendOptions
    from gptoss_cli.chat.command import ChatOptions, run_chat
    from gptoss_cli.chat.tooling import ToolOptions
    from gptoss_cli.engine.session import Sampling

    opts = ChatOptions(
        model=model, effort=effort.lower(), show_thinking=show_thinking, system=system, prompt=prompt,
        json_out=json_out, fit=fit, rpc=rpc, sampling=Sampling(temperature, top_p, max_tokens),
        backend=BackendOptions(ctx_size=ctx_size, threads=threads, gpu_layers=gpu_layers,
                               flash_attn=flash_attn.value,
                               cpu_moe=cpu_moe, n_cpu_moe=n_cpu_moe, seed=seed))
    opts.tools = ToolOptions(mcp=mcp, mcp_env=mcp_env, yes=yes, allow_tool=allow_tool,
                             max_tool_calls=max_tool_calls, schema=schema, thinking_budget=thinking_budget,
                             tool_choice=tool_choice)
    run_guarded(lambda: run_chat(opts))


SERVE_EXIT_CODES = """Exit codes: 0 stopped by SIGTERM; 1 the model failed to load or the port is taken; 2 bad input
(no such model, bad option, a non-loopback --host without a key or --no-auth, unreadable key file); 130 Ctrl-C."""


@app.command(epilog=SERVE_EXIT_CODES)
def serve(
    model: Optional[str] = typer.Argument(None, autocompletion=complete_gguf_model,
                                         help="A .gguf path or 20b/120b (default: the last GGUF written)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to bind; beyond loopback needs a key or --no-auth."),
    port: int = typer.Option(8080, "--port", min=0, max=65535, help="Port (0: any free port; the URL is printed)."),
    parallel: int = typer.Option(4, "--parallel", "-np", min=1, max=64, help="Requests decoded together (slots)."),
    queue: int = typer.Option(16, "--queue", min=0, help="Requests that may wait for a slot; beyond: HTTP 429."),
    api_key_file: Optional[Path] = typer.Option(None, "--api-key-file", help="File holding the API key every /v1 "
                                                "request must send (also: $GPTOSS_API_KEY; never on the command line)."),
    no_auth: bool = typer.Option(False, "--no-auth", help="Serve a non-loopback --host without a key."),
    log_requests: bool = typer.Option(False, "--log-requests", help="Log request bodies to stderr."),
    effort: str = typer.Option("medium", "--effort", "-e", help="Default reasoning effort: low, medium or high."),
    thinking_budget: Optional[int] = typer.Option(None, "--thinking-budget", min=0,
                                                  help="Default most thinking tokens per reply (request field "
                                                       "thinking_budget overrides)."),
    max_tokens: Optional[int] = typer.Option(None, "--max-tokens", min=1,
                                             help="Default most tokens per reply (default: the slot's context)."),
    ctx_size: int = typer.Option(8192, "--ctx-size", "-c", min=64, help="Context size of each slot, in tokens."),
    threads: Optional[int] = typer.Option(None, "--threads", "-t", min=1, help="CPU threads (default: auto)."),
    gpu_layers: int = typer.Option(-1, "--gpu-layers", "-ngl", help="Layers on the GPU (-1: all, when there is one)."),
    flash_attn: FlashAttn = typer.Option("auto", "--flash-attn", "-fa", help="Flash attention: auto, on or off."),
    cpu_moe: bool = typer.Option(False, "--cpu-moe", help="Keep all expert weights in system RAM."),
    n_cpu_moe: int = typer.Option(0, "--n-cpu-moe", min=0, help="Keep the experts of the first N layers in RAM."),
    fit: bool = typer.Option(False, "--fit", help="Choose --n-cpu-moe from free memory for all slots' context."),
    rpc: Optional[str] = typer.Option(None, "--rpc", help="Spread the layers over these `gptoss worker`s: "
                                                          "HOST:PORT[,HOST:PORT...]."),
    seed: int = typer.Option(-1, "--seed", help="Default sampling seed (-1: random; request field seed overrides)."),
) -> None:
    """Serve a gpt-oss GGUF over an OpenAI-compatible API (chat completions, Responses), requests in parallel.

    Examples:

        gptoss serve 20b                      # prints http://127.0.0.1:8080/v1 when ready

        gptoss serve 120b --fit --parallel 4 --api-key-file ~/.config/gptoss/key

        curl -s 127.0.0.1:8080/v1/chat/completions -d '{"messages":[{"role":"user","content":"hi"}]}'
    """
    from gptoss_cli.engine.backend import BackendOptions
    from gptoss_cli.serve.plan import Defaults
    from gptoss_cli.serve.server import ServeOptions, run_serve

    opts = ServeOptions(
        model=model, host=host, port=port, parallel=parallel, queue=queue, api_key_file=api_key_file,
        no_auth=no_auth, log_requests=log_requests, fit=fit, rpc=rpc,
        defaults=Defaults(effort=effort.lower(), thinking_budget=thinking_budget, max_tokens=max_tokens),
        backend=BackendOptions(ctx_size=ctx_size, threads=threads, gpu_layers=gpu_layers,
                               flash_attn=flash_attn.value, cpu_moe=cpu_moe, n_cpu_moe=n_cpu_moe, seed=seed))
    run_guarded(lambda: run_serve(opts))


PLAN_EXIT_CODES = """Exit codes: 0 it fits (the plan and a `gptoss chat` command are printed); 1 it does not fit;
2 bad input (no such model, bad size)."""


@app.command(epilog=PLAN_EXIT_CODES)
def plan(
    model: Optional[str] = typer.Argument(None, autocompletion=complete_gguf_model,
                                         help="A .gguf, a snapshot folder, 20b/120b or a repo id "
                                              "(default: the last GGUF written)."),
    ctx_size: int = typer.Option(8192, "--ctx-size", "--ctx", "-c", min=1, help="Context size in tokens."),
    vram: Optional[str] = typer.Option(None, "--vram", help="GPU memory to plan for, e.g. 24GB (default: free "
                                                           "memory of this machine's GPUs; 0: CPU only)."),
    ram: Optional[str] = typer.Option(None, "--ram", help="System RAM to plan for (default: available RAM)."),
    flash_attn: FlashAttn = typer.Option("auto", "--flash-attn", "-fa", help="Flash attention as chat will run it: "
                                         "auto and on plan its much smaller compute buffer."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
    rpc: Optional[str] = typer.Option(None, "--rpc", help="Plan for these `gptoss worker`s: "
                                                          "HOST:PORT[,HOST:PORT...]."),
) -> None:
    """Plan memory without loading anything: what goes on the GPU, what stays in RAM, the --n-cpu-moe to use.

    Sizes are binary: 24GB means 24 GiB, as GPU memory is counted.

    Examples:

        gptoss plan 120b --vram 24GB --ctx 32768

        gptoss plan 20b --vram 8GB --flash-attn off

        gptoss plan gpt-oss-120b-mxfp4.gguf --json | jq .n_cpu_moe

        gptoss plan 120b --rpc 10.0.0.2:50052,10.0.0.3:50052   # asks each worker for its memory
    """
    from gptoss_cli.memory.planning import run_plan

    run_guarded(lambda: run_plan(model, ctx_size, vram, ram, flash_attn.value, json_out, rpc))


# --- recipes / imatrix / eval --------------------------------------------------------------------

@app.command()
def recipes(json_out: bool = typer.Option(False, "--json", help="Print one JSON document.")) -> None:
    """The quantization recipes: types per tensor class, imatrix need, expected size for 20b and 120b.

    Examples:

        gptoss recipes

        gptoss recipes --json | jq '.recipes[].recipe'
    """
    from gptoss_cli.quant.recipes import run_recipes

    run_guarded(lambda: run_recipes(json_out))


@app.command()
def imatrix(
    model: Optional[str] = typer.Argument(None, autocompletion=complete_gguf_model,
                                         help="A .gguf path or 20b/120b (default: the last GGUF written)."),
    text: Optional[str] = typer.Option(None, "--text", help="Calibration text file (`-` reads stdin)."),
    from_file: Optional[Path] = typer.Option(None, "--from", help="Import an imatrix made by llama-imatrix "
                                                                  "(GGUF or legacy .dat) instead."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Output file (default: "
                                          "$GPTOSS_HOME/models/gpt-oss-SIZE.imatrix.gguf)."),
    chunk_size: int = typer.Option(512, "--chunk-size", "--ctx-size", "-c", min=16, help="Tokens per chunk."),
    threads: Optional[int] = typer.Option(None, "--threads", "-t", min=1, help="CPU threads (default: auto)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing output file."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
) -> None:
    """Compute an importance matrix with llama.cpp (llama-imatrix's format; llama-quantize reads it too).

    Examples:

        gptoss imatrix 20b --text calib.txt

        gptoss imatrix gpt-oss-120b-mxfp4.gguf --text calib.txt -o 120b.imatrix.gguf

        gptoss imatrix --from imatrix.dat        # one made by llama-imatrix
    """
    from gptoss_cli.quant.imatrix import run_imatrix

    run_guarded(lambda: run_imatrix(model, text, from_file, output, chunk_size, threads, force, json_out))


@app.command("eval")
def eval_(
    reference: str = typer.Argument(..., help="The reference GGUF (e.g. the f16 recipe)."),
    tests: list[str] = typer.Argument(..., help="One or more GGUFs to compare with it."),
    text: str = typer.Option(..., "--text", help="Evaluation text file (`-` reads stdin)."),
    ctx_size: int = typer.Option(512, "--ctx-size", "-c", min=16, help="Tokens per chunk."),
    chunks: Optional[int] = typer.Option(None, "--chunks", min=1, help="Evaluate at most this many chunks."),
    threads: Optional[int] = typer.Option(None, "--threads", "-t", min=1, help="CPU threads (default: auto)."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON document."),
    rpc: Optional[str] = typer.Option(None, "--rpc", help="Spread the layers over these `gptoss worker`s: "
                                                          "HOST:PORT[,HOST:PORT...]."),
) -> None:
    """KL divergence (mean, p99) and top-1 agreement against a reference GGUF, and each file's perplexity.

    The second half of every chunk is scored, as llama-perplexity does.

    Examples:

        gptoss eval gpt-oss-20b-f16.gguf gpt-oss-20b-experts-q3.gguf --text sample.txt

        gptoss eval ref.gguf a.gguf b.gguf --text wiki.txt --chunks 20 --json | jq '.results[].kl_mean'
    """
    from gptoss_cli.quant.evaluate import run_eval

    run_guarded(lambda: run_eval(reference, tests, text, ctx_size, threads, chunks, json_out, rpc))


# --- worker (llama.cpp RPC) ------------------------------------------------------------------------

WORKER_EXIT_CODES = """Exit codes: 1 the server could not start (port in use, no RPC backend); 2 bad input (a
non-loopback --host without --allow-remote, unknown --device); 130 stopped with Ctrl-C."""


@app.command(epilog=WORKER_EXIT_CODES)
def worker(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on. Anything but loopback needs "
                                                         "--allow-remote."),
    port: int = typer.Option(50052, "--port", "-p", min=1, max=65535, help="TCP port."),
    device: Optional[str] = typer.Option(None, "--device", "-d", help="llama.cpp device to serve, e.g. CPU or "
                                         "CUDA0 (default: the GPU with the most free memory, else CPU)."),
    cache: Optional[Path] = typer.Option(None, "--cache", help="Keep received weights in this folder: the next "
                                                               "load of the same model skips the network."),
    threads: Optional[int] = typer.Option(None, "--threads", "-t", min=1, help="CPU threads (default: auto)."),
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


def main() -> None:
    """Console-script entry point; a crash inside llama.cpp still prints where it happened (faulthandler)."""
    import faulthandler

    faulthandler.enable()
    app(prog_name="gptoss")  # also under `python -m gptoss_cli`: usage lines and completion say gptoss
