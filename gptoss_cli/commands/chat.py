"""`gptoss chat`: its options; the body is chat/command.py."""

from __future__ import annotations

import typer

from gptoss_cli.commands.options import CpuMoe, FlashAttn, FlashAttnOpt, GgufModel, GpuLayers, NCpuMoe, Rpc, Threads
from gptoss_cli.errors import run_guarded

CHAT_EXIT_CODES = """Exit codes: 0 answered; 1 the model failed to load or run, or gave no answer; 2 bad input
(no such model, not a gpt-oss GGUF, empty prompt, bad option); 130 interrupted."""


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
    from gptoss_cli.chat.turns import ToolOptions
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
