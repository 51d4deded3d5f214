"""`gptoss plan` and `chat --fit`: a model's shape from its files, this machine's free memory, and the plan."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from converters.errors import BadInputError, ModelNotFound
from gptoss_cli.memory.devices import Device, gpu_devices, parse_size, ram_device
from gptoss_cli.memory.multi_device import MultiDevicePlacement, multi_device_rows, multi_device_title, plan_devices
from gptoss_cli.memory.placement import (
    DoesNotFit,
    GiB,
    Placement,
    advice,
    flash_attn_used,
    plan_memory,
    plan_rows,
    plan_title,
)
from gptoss_cli.memory.shapes import (
    KNOWN_CONFIGS,
    ModelShape,
    check_keep,
    config_of,
    shape_from_config,
    shape_from_gguf,
)


def load_shape(model: str | None, keep: int | None = None) -> tuple[ModelShape, str]:
    """The shape of a model argument and where it came from: GGUF header, config.json, or built-in; with keep,
    the shape after pruning to keep experts per layer (exact from a GGUF header)."""
    from gptoss_cli import paths

    if model is not None and Path(model).expanduser().exists():
        p = Path(model).expanduser()
        if p.is_dir():
            return _from_config(config_of(p), p.name, keep), "estimate from config.json (recipe mxfp4)"
        return shape_from_gguf(p, keep), "GGUF header"
    try:
        gguf_path = paths.resolve_gguf(model)
        return shape_from_gguf(gguf_path, keep), f"GGUF header of {gguf_path.name}"
    except ModelNotFound:
        if model is None or model.endswith(".gguf"):
            raise
    repo = paths.repo_id_for(model)
    snap = paths.cached_snapshot(repo)
    if snap is not None:
        return _from_config(config_of(snap), snap.name, keep), f"estimate from {repo} config.json (recipe mxfp4)"
    size = paths.short_name(repo).lower()
    if size in KNOWN_CONFIGS:
        return (_from_config(KNOWN_CONFIGS[size], f"gpt-oss-{size}", keep),
                f"estimate from the gpt-oss-{size} release shape (recipe mxfp4)")
    raise ModelNotFound(model, "no GGUF, snapshot or known shape for it", "Pass a .gguf, a folder, 20b or 120b")


def _from_config(config: dict, name: str, keep: int | None) -> ModelShape:
    if keep is not None:
        check_keep(keep, int(config.get("num_experts_per_tok") or config.get("experts_per_token") or 1),
                   int(config.get("num_local_experts", 0)), name)
        config = {**config, "num_local_experts": keep}
    return shape_from_config(config, name)


def _chat_target(model: str | None, keep: int | None) -> str:
    """What `gptoss chat` is given: the model, or with keep the file `gptoss prune --keep` writes for it."""
    from gptoss_cli import paths

    if keep is None or not model:
        return model or ""
    if model.endswith(".gguf"):
        return f"{Path(model).stem}-{keep}e.gguf"
    if Path(model).expanduser().is_dir():
        return f"{paths.folder_stem(Path(model).expanduser())}-mxfp4-{keep}e.gguf"
    return f"{paths.repo_stem(paths.repo_id_for(model))}-mxfp4-{keep}e.gguf"


def probe(vram: str | None, ram: str | None) -> tuple[int, int, list[Device]]:
    """(GPU bytes free, RAM bytes free, devices) from --vram/--ram or from the machine."""
    devices = []
    if vram is None:
        devices += gpu_devices()
        gpu_free = sum(d.free for d in devices)
    else:
        gpu_free = parse_size(vram)
        devices.append(Device("GPU (--vram)", "gpu", gpu_free, gpu_free, "--vram"))
    if ram is None:
        r = ram_device()
    else:
        r = Device("system RAM (--ram)", "ram", parse_size(ram), parse_size(ram), "--ram")
    return gpu_free, r.free, devices + [r]


@dataclass
class PlanOptions:
    """Everything `gptoss plan` was asked for."""

    model: str | None = None
    ctx: int = 8192
    vram: str | None = None         # --vram SIZE: plan for this much GPU memory instead of this machine's
    ram: str | None = None          # --ram SIZE: likewise for system RAM
    flash_attn: str = "auto"
    as_json: bool = False
    rpc: str | None = None          # --rpc HOST:PORT,...: plan over these workers
    keep: int | None = None         # --keep N: plan for the model pruned to N experts per layer
    parallel: int = 1               # --parallel N: serve's N slots of ctx tokens each


def _command(opts: PlanOptions, flags: str) -> str:
    """The command the plan is for: `gptoss chat`, or `gptoss serve` with its --parallel slots."""
    flags += f" --ctx-size {opts.ctx}" + ("" if opts.flash_attn == "auto" else f" --flash-attn {opts.flash_attn}")
    if opts.parallel > 1:
        return f"gptoss serve {_chat_target(opts.model, opts.keep)}".rstrip() + flags + f" --parallel {opts.parallel}"
    return f"gptoss chat {_chat_target(opts.model, opts.keep)}".rstrip() + flags


def run_plan(opts: PlanOptions) -> None:
    """`gptoss plan`: print where everything goes; DoesNotFit when nothing does."""
    from gptoss_cli import ui

    model, ctx, flash_attn = opts.model, opts.ctx, opts.flash_attn
    if ctx < 1:
        raise BadInputError(str(ctx), "--ctx-size must be positive")
    if opts.parallel < 1:
        raise BadInputError(str(opts.parallel), "--parallel must be positive")
    shape, source = load_shape(model, opts.keep)
    if opts.keep is not None:
        source += f", pruned to {opts.keep} experts per layer"
    if opts.rpc:
        return _run_plan_rpc(shape, source, opts.rpc, opts)
    gpu_free, ram_free, devices = probe(opts.vram, opts.ram)
    plan = plan_memory(shape, ctx, gpu_free, ram_free, flash_attn=flash_attn_used(flash_attn),
                       parallel=opts.parallel)
    command = _command(opts, f" --n-cpu-moe {plan.n_cpu_moe}" if plan.gpu and plan.n_cpu_moe else "")
    if opts.as_json:
        ui.print_json({**plan.to_json(), "source": source, "command": command if plan.fits else None,
                       "devices": [asdict(d) for d in devices]})
    else:
        ui.info(f"shape: {source}; free: " + ", ".join(f"{d.name} {d.free / GiB:.1f} GiB" for d in devices))
        ui.table(plan_title(plan), ["where", "what", "size"], plan_rows(plan, shape), right=["size"])
        if plan.fits:
            ui.result(command + "\n")
    if not plan.fits:
        raise DoesNotFit(shape.name, plan.reason, advice(plan, flash_attn_used(flash_attn)))


def fit(model_path: Path, ctx: int, flash_attn: str = "auto", workers: list | None = None,
        parallel: int = 1) -> Placement | MultiDevicePlacement:
    """`--fit`: plan ctx tokens in each of `parallel` sequences from the GGUF and this machine's free memory
    (with workers: theirs, over all devices); the table goes to stderr."""
    from gptoss_cli import ui

    shape = shape_from_gguf(model_path)
    if workers:
        from gptoss_cli.rpc.client import offload_table

        multi = plan_devices(shape, ctx, offload_table(workers), ram_device().free,
                             flash_attn=flash_attn_used(flash_attn), fit=True, parallel=parallel)
        ui.err_table(multi_device_title(multi), ["where", "what", "size"], multi_device_rows(multi), right=["size"])
        if not multi.fits:
            raise DoesNotFit(model_path, multi.reason, "Add a worker, or free memory on the one named")
        return multi
    gpu_free, ram_free, _ = probe(None, None)
    plan = plan_memory(shape, ctx, gpu_free, ram_free, flash_attn=flash_attn_used(flash_attn), parallel=parallel)
    ui.err_table(plan_title(plan), ["where", "what", "size"], plan_rows(plan, shape), right=["size"])
    if not plan.fits:
        raise DoesNotFit(model_path, plan.reason, advice(plan, flash_attn_used(flash_attn)))
    return plan


def _run_plan_rpc(shape: ModelShape, source: str, rpc: str, opts: PlanOptions) -> None:
    """`gptoss plan --rpc`: ask each worker for its memory, split the layers as llama.cpp will."""
    from gptoss_cli import ui
    from gptoss_cli.rpc.client import connect, offload_table

    ctx, vram, ram, flash_attn = opts.ctx, opts.vram, opts.ram, opts.flash_attn
    workers = connect(rpc)
    devices = offload_table(workers)
    if vram is not None:   # plan for another local GPU than this machine's
        devices = [d for d in devices if not d[0].endswith("(local)")]
        devices += [("GPU (--vram)", parse_size(vram))] if parse_size(vram) else []
    ram_free = parse_size(ram) if ram is not None else ram_device().free
    plan = plan_devices(shape, ctx, devices, ram_free, flash_attn=flash_attn_used(flash_attn), fit=True,
                        parallel=opts.parallel)
    command = _command(opts, f" --rpc {rpc}" + (" --fit" if plan.split else ""))
    if opts.as_json:
        ui.print_json({**plan.to_json(), "source": source, "command": command if plan.fits else None})
    else:
        ui.info(f"shape: {source}; free: " + ", ".join(f"{n} {f / GiB:.1f} GiB" for n, f in devices)
                + f", local RAM {ram_free / GiB:.1f} GiB")
        ui.table(multi_device_title(plan), ["where", "what", "size"], multi_device_rows(plan), right=["size"])
        if plan.fits:
            ui.result(command + "\n")
    if not plan.fits:
        raise DoesNotFit(shape.name, plan.reason, "Add a worker, or free memory on the device named")


def fit_backend(model_path: Path, b, workers: list | None = None, parallel: int = 1) -> None:
    """`--fit` for chat and serve: plan the context they create (b.ctx_size tokens in each of `parallel`
    sequences) and set b's (BackendOptions) expert placement."""
    from gptoss_cli import ui

    if b.cpu_moe or b.n_cpu_moe:
        raise BadInputError(None, "--fit chooses the expert placement itself",
                            "Use either --fit or --cpu-moe / --n-cpu-moe")
    plan = fit(model_path, b.ctx_size, b.flash_attn, workers=workers or [], parallel=parallel)
    if isinstance(plan, MultiDevicePlacement):  # with workers
        ui.info(plan.apply_to(b))
    elif plan.gpu:
        b.n_cpu_moe = plan.n_cpu_moe
        ui.info(f"--fit: --n-cpu-moe {plan.n_cpu_moe}")
    else:
        b.gpu_layers = 0
        ui.info("--fit: no usable GPU memory, running on the CPU")
