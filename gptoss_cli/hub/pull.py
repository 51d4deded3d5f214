"""`gptoss pull`: show the plan, check the disk, download with progress, verify, optionally quantize."""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from converters.errors import BadInputError
from gptoss_cli import paths, ui
from gptoss_cli.hub import client as hub
from gptoss_cli.hub.download import download


@dataclass
class PullOptions:
    """Everything `gptoss pull` was asked for."""

    model: str
    revision: str | None = None
    local_dir: Path | None = None   # --dir: a plain folder instead of the HF cache
    token: str | None = None        # --token; None: $HF_TOKEN or the saved login
    quantize: bool = False          # --quantize: then convert with the default recipe
    verify: bool = True             # sha256 of every downloaded file (off with --no-verify)
    as_json: bool = False
    workers: int = 8                # --max-workers: files downloaded in parallel


def run_pull(opts: PullOptions) -> dict:
    """Pull the files a converter needs from the hub; print the folder (or one JSON document)."""
    repo_id = paths.repo_id_for(opts.model)
    local_dir = Path(opts.local_dir).expanduser().absolute() if opts.local_dir else None
    tok = hub.resolve_token(opts.token)
    if hub.offline():
        report = _offline(repo_id, opts.revision, local_dir)
    else:
        plan = hub.plan_download(repo_id, opts.revision, local_dir, tok)
        _show_plan(plan)
        report = {"status": "up_to_date", "plan": plan.to_json(), "path": str(plan.target),
                  "bytes_downloaded": 0, "seconds": 0.0, "mb_per_s": None, "verified": None}
        if plan.up_to_date:
            hub.assert_gpt_oss(plan.target / "config.json", repo_id)
            ui.info(f"{repo_id} is up to date ({ui.human_bytes(plan.total_bytes)}).")
        else:
            report.update(_download(plan, tok, opts.verify, opts.workers, opts.quantize))
    folder = Path(report["path"])
    paths.remember("snapshot", folder)
    if local_dir is not None:
        from gptoss_cli.hub.library import record_dir
        record_dir(repo_id, folder)
    if opts.quantize:
        report["quantize"] = _quantize(folder, opts.model, opts.as_json)
    if opts.as_json:
        ui.print_json(report)
    elif not opts.quantize:
        ui.result(f"{folder}\n")
    return report


def _show_plan(plan: hub.DownloadPlan) -> None:
    short = plan.commit[:12]
    ui.info(f"{plan.repo_id} @ {plan.revision} ({short}) -> {plan.target}")
    skipped = sum(s for _, s in plan.skipped)
    ui.info(f"  {len(plan.files)} files, {ui.human_bytes(plan.total_bytes)}; "
            f"{ui.human_bytes(plan.present_bytes)} already here, {ui.human_bytes(plan.download_bytes)} to download"
            + (f"; skipping {len(plan.skipped)} files ({ui.human_bytes(skipped)}: original/, metal/, docs)"
               if plan.skipped else ""))


def _download(plan: hub.DownloadPlan, token: str | None, verify: bool, workers: int, quantize: bool) -> dict:
    extra = plan.total_bytes if quantize and _same_disk(plan.local_dir or hub.cache_dir(), paths.models_dir()) else 0
    free = hub.preflight(plan, extra=extra)
    ui.info(f"  {ui.human_bytes(free)} free; sha256 verification {'on' if verify else 'off (--no-verify)'}")
    done = {f.name: f.partial for f in plan.files if not f.present}
    started = time.perf_counter()
    with ui.transfer_progress(sum(f.size for f in plan.files if not f.present), done) as bars:
        callbacks = hub.Callbacks(bars.start, bars.advance, bars.finish, bars.retry, bars.stopping)
        folder = download(plan, token, verify=verify, workers=workers, callbacks=callbacks, retry=_retry())
    seconds = time.perf_counter() - started
    rate = plan.download_bytes / 1e6 / max(seconds, 1e-9)
    ui.info(f"pulled {ui.human_bytes(plan.download_bytes)} in {seconds:.1f} s ({rate:.0f} MB/s)"
            + (", every file checked against the hub's checksums" if verify else ""))
    return {"status": "downloaded", "path": str(folder), "bytes_downloaded": plan.download_bytes,
            "seconds": round(seconds, 3), "mb_per_s": round(rate, 1), "verified": verify}


def _retry() -> hub.Retry:
    """Retry policy; $GPTOSS_PULL_RETRY_WAIT sets the first wait in seconds (tests use 0)."""
    try:
        wait = float(os.environ.get("GPTOSS_PULL_RETRY_WAIT", "1"))
    except ValueError:
        raise BadInputError("GPTOSS_PULL_RETRY_WAIT", "not a number of seconds", "Unset it or give e.g. 1") from None
    return hub.Retry(wait=max(0.0, wait))


def _same_disk(a: Path, b: Path) -> bool:
    def dev(p: Path) -> int:
        p = p.absolute()
        while not p.exists() and p != p.parent:
            p = p.parent
        return os.stat(p).st_dev
    return dev(a) == dev(b)


def _offline(repo_id: str, revision: str | None, local_dir: Path | None) -> dict:
    """HF_HUB_OFFLINE: no network; succeed only if the snapshot on disk is complete."""
    revision = revision or "main"
    folder = local_dir
    if folder is None:
        storage = hub.repo_storage(repo_id)
        commit = revision if re.fullmatch(r"[0-9a-f]{40}", revision) else None
        ref = storage / "refs" / revision
        if commit is None and ref.is_file():
            commit = ref.read_text().strip()
        folder = storage / "snapshots" / commit if commit else None
    missing = missing_files(folder) if folder else ["config.json"]
    if missing:
        raise BadInputError(repo_id, f"HF_HUB_OFFLINE is set and the local copy lacks {', '.join(missing[:3])}",
                            "Unset HF_HUB_OFFLINE to download it")
    ui.info(f"{repo_id} is up to date (offline: checked the files on disk only).")
    return {"status": "up_to_date", "offline": True, "path": str(folder), "bytes_downloaded": 0}


def missing_files(folder: Path) -> list[str]:
    """Files a converter needs that are absent from a snapshot folder (config, index and every shard)."""
    if not (folder / "config.json").is_file():
        return ["config.json"]
    index = folder / "model.safetensors.index.json"
    if not index.is_file():
        return [] if (folder / "model.safetensors").is_file() else ["model.safetensors.index.json"]
    try:
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
    except (OSError, ValueError, KeyError):
        return ["model.safetensors.index.json"]
    return [s for s in shards if not (folder / s).is_file()]


def _quantize(folder: Path, model: str, as_json: bool) -> dict:
    """Run the default recipe on the pulled snapshot, like `gptoss quantize` (skipped if the GGUF exists)."""
    from gptoss_cli.quant.quantize import QuantizeOptions, gguf_stem, run_quantize, summary_dict

    out = paths.default_gguf_path(gguf_stem(folder, model), "mxfp4")
    if out.exists():
        ui.info(f"already quantized: {out} (run `gptoss quantize --force` to redo it)")
        paths.remember("gguf", out)
        if not as_json:
            ui.result(f"{out}\n")
        return {"path": str(out), "skipped": True}
    from converters.convert import ConvertResult, convert_checkpoint

    if not as_json:
        converted = run_quantize(QuantizeOptions(model=str(folder), recipe="mxfp4"))
        assert isinstance(converted, ConvertResult)  # not a dry run
        return summary_dict(converted)
    with ui.byte_progress("converting") as advance:
        result = convert_checkpoint(folder, out, recipe="mxfp4", progress=lambda n, total, name: advance(n, total))
    paths.remember("gguf", result.path)
    return summary_dict(result)
