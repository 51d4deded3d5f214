"""`gptoss chat`: load a GGUF, then the REPL, or one-shot when given -p or piped stdin."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from converters.errors import BadInputError, RunFailure
from gptoss_cli import paths, ui
from gptoss_cli.chat.repl import Repl
from gptoss_cli.chat.scripted import with_script
from gptoss_cli.chat.turns import ToolOptions, TurnRunner, start_hub
from gptoss_cli.engine import harmony
from gptoss_cli.engine.backend import Backend, BackendOptions
from gptoss_cli.engine.session import Sampling, Session, TokenBackend, TurnResult
from gptoss_cli.tools.mcp_client import RemoteTool


@dataclass
class ChatOptions:
    """Everything `gptoss chat` was asked for."""

    model: str | None = None
    effort: str = "medium"
    show_thinking: bool = False
    system: str = ""
    prompt: str | None = None
    json_out: bool = False
    fit: bool = False
    rpc: str | None = None          # --rpc HOST:PORT,...: workers that take layers (gptoss worker)
    sampling: Sampling = field(default_factory=Sampling)
    backend: BackendOptions = field(default_factory=BackendOptions)
    tools: ToolOptions = field(default_factory=ToolOptions)


class NoAnswer(RunFailure):
    """The model produced no final answer."""

    what = "no answer"


def run_chat(opts: ChatOptions) -> None:
    """Resolve the model, load it, and chat (REPL on a terminal, one-shot otherwise)."""
    if opts.effort not in harmony.EFFORTS:
        raise BadInputError(None, f"unknown effort {opts.effort!r}", "Use --effort low, medium or high")
    prompt = _one_shot_prompt(opts)
    if opts.model is None:
        gguf, why = paths.default_gguf()
        ui.info(f"using {gguf} ({why})")
    else:
        gguf = paths.resolve_gguf(opts.model)
    backend_opts = opts.backend
    workers = []
    if opts.rpc:
        from gptoss_cli.rpc.client import attach

        workers = attach(opts.rpc, backend_opts)
    if opts.fit:
        _fit(gguf, backend_opts, workers)
    hub = start_hub(opts.tools)  # before the model: a server that fails stops the chat early
    repl: Repl | None = None

    def ask(tool: RemoteTool, arguments: dict) -> str:
        """The REPL's approval prompt (the REPL is built once the model is loaded); one-shot runs never ask."""
        return repl.approve(tool, arguments) if repl is not None else "n"

    try:
        turns = TurnRunner(opts.tools, hub, ask=ask if prompt is None else None)
        with ui.status(f"loading {gguf.name}"):
            backend = with_script(Backend(gguf, backend_opts))  # tests: GPTOSS_TEST_REPLY
    except BaseException:
        if hub is not None:
            hub.close()
        raise
    try:
        session = Session(n_ctx=backend.n_ctx, effort=opts.effort, instructions=opts.system)
        turns.attach(session)
        if prompt is None:
            repl = Repl(session, backend, opts.sampling, turns=turns, show_thinking=opts.show_thinking,
                        model_name=gguf.name)
            if workers:
                _save_on_worker_lost(session, gguf.name, lambda: repl.pending)
            repl.run()
        else:
            one_shot(session, backend, prompt, opts, model_name=str(gguf), turns=turns)
    finally:
        if hub is not None:
            hub.close()
        backend.close()


def _one_shot_prompt(opts: ChatOptions) -> str | None:
    """The prompt of one-shot mode (-p, or stdin when it is not a terminal); None for the REPL."""
    if opts.prompt is not None:
        text = sys.stdin.read() if opts.prompt == "-" else opts.prompt
    elif not sys.stdin.isatty():
        text = sys.stdin.read()
    elif opts.json_out:
        raise BadInputError(None, "--json needs a prompt", 'Pass -p "TEXT" or pipe the prompt on stdin')
    else:
        return None
    if not text.strip():
        raise BadInputError(None, "the prompt is empty", 'Pass -p "TEXT" or pipe a non-empty prompt on stdin')
    return text.strip("\n")


def one_shot(session: Session, backend: TokenBackend, prompt: str, opts: ChatOptions, model_name: str = "",
             turns: TurnRunner | None = None) -> TurnResult:
    """Answer one prompt: the final answer streams to stdout, thinking (if asked) to stderr."""
    turns = turns or TurnRunner(opts.tools)
    stream = not opts.json_out
    wrote: list[str] = []
    # On a terminal the model's text is shown with control characters made visible; piped, it is byte-exact.
    answer, thinking = ui.Writer(sys.stdout), ui.Writer(sys.stderr)

    def on_delta(channel: str, text: str) -> None:
        if channel == "final" and stream:
            answer.write(text)
            wrote.append(text)
        elif channel == "analysis" and opts.show_thinking and stream:
            thinking.write(text)

    try:
        result = turns.run(session, backend, prompt, opts.sampling, on_delta=on_delta)
        answer.close()
    except BrokenPipeError:  # the reader went away (`| head`): stop quietly, like other Unix tools
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    if wrote and not wrote[-1].endswith("\n"):
        sys.stdout.write("\n")
        sys.stdout.flush()
    thinking.close()
    if opts.show_thinking and stream and result.turn.analysis:
        sys.stderr.write("\n")
    stop = result.stats.stop_reason
    if stop == "interrupted":
        raise KeyboardInterrupt
    if opts.json_out:
        ui.print_json(result_json(result, model_name, session.effort))
    if not result.turn.final:
        raise NoAnswer(model_name or None, f"the model stopped ({stop}) before writing a final answer",
                       "Raise --max-tokens or --ctx-size, or lower --effort")
    if stop == "length" and turns.schema is not None:
        raise NoAnswer(model_name or None, "the answer was cut at the token limit, so it is not a complete "
                       "JSON value for --schema", "Raise --max-tokens or --ctx-size, or set --thinking-budget")
    if stop == "length":
        ui.warn("the answer was cut at the token limit; raise --max-tokens or --ctx-size for more")
    return result


def result_json(result: TurnResult, model: str, effort: str) -> dict:
    """The one JSON document of `gptoss chat --json`."""
    s = result.stats
    return {
        "model": model, "effort": effort,
        "final": result.turn.final, "analysis": result.turn.analysis, "stop_reason": s.stop_reason,
        "tokens": {"prompt": s.prompt_tokens, "generated": s.gen_tokens, "analysis": s.analysis_tokens,
                   "context": s.n_ctx},
        "timings": {"ttft_s": round(s.ttft_s, 6), "decode_tokens_per_s": round(s.decode_tps, 3),
                    "total_s": round(s.total_s, 6)},
        "tool_calls": result.turn.tool_calls,
    }


def _save_on_worker_lost(session: Session, model_name: str, pending) -> None:
    """If a worker dies mid-reply the process exits from inside llama.cpp: save the conversation first,
    the unanswered message included (pending() returns it)."""
    import time

    from gptoss_cli.engine.session import Turn
    from gptoss_cli.rpc.faults import on_worker_lost

    def save() -> str | None:
        asked = pending()
        if asked is not None:
            session.turns.append(Turn(user=asked, stop_reason="worker_lost"))
        if not session.turns:
            return None
        folder = paths.state_dir() / "conversations"
        folder.mkdir(parents=True, exist_ok=True)
        path = session.save(folder / time.strftime("worker-lost-%Y%m%d-%H%M%S.json"), model=model_name)
        return f"The conversation is saved to {path} (/load it to continue)"

    on_worker_lost(save)


def _fit(gguf: Path, backend_opts, workers: list | None = None) -> None:
    """--fit: choose --n-cpu-moe from the GGUF and free memory (the plan table goes to stderr)."""
    from gptoss_cli.memory.planning import fit_backend

    fit_backend(gguf, backend_opts, workers)
