"""`gptoss list` and `gptoss rm`: the local gpt-oss snapshots (HF cache and --dir pulls) and GGUF files."""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from converters.errors import BadInputError, ModelNotFound
from gptoss_cli import paths, ui
from gptoss_cli.hub import client as hub

PULLS_FILE = "pulls.json"  # --dir pulls, so `list` and `rm` find them outside the HF cache


def record_dir(repo_id: str, folder: Path) -> None:
    """Remember a --dir pull (folder -> repo id)."""
    data = _read_pulls()
    data[str(Path(folder).absolute())] = repo_id
    target = paths.state_dir() / PULLS_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".partial")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, target)


def _read_pulls() -> dict[str, str]:
    try:
        return json.loads((paths.state_dir() / PULLS_FILE).read_text())
    except (OSError, ValueError):
        return {}


def tree_bytes(path: Path) -> int:
    """Bytes of the regular files under path (symlinks not followed, so HF blobs count once)."""
    if path.is_file():
        return path.stat().st_size
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(root, name))
            total += st.st_size if not os.path.islink(os.path.join(root, name)) else 0
    return total


def _is_gpt_oss(folder: Path) -> bool:
    try:
        return json.loads((folder / "config.json").read_text()).get("model_type") == "gpt_oss"
    except (OSError, ValueError):
        return False


def _display_name(repo_id: str) -> str:
    short = {v: k for k, v in paths.SHORT_NAMES.items()}
    return short.get(repo_id, repo_id)


def _snapshot_size(folder: Path) -> int:
    seen, total = set(), 0
    for f in folder.rglob("*"):
        real = f.resolve()
        if real.is_file() and real not in seen:
            seen.add(real)
            total += real.stat().st_size
    return total


def entries() -> list[dict]:
    """Every local snapshot (with a gpt-oss config) and GGUF: name, kind, revision, size, path, complete."""
    from gptoss_cli.hub.pull import missing_files

    rows = []
    cache = hub.cache_dir()
    for storage in sorted(cache.glob("models--*")) if cache.is_dir() else []:
        repo_id = storage.name[len("models--"):].replace("--", "/")
        refs: dict[str, list[str]] = {}
        for ref in (storage / "refs").rglob("*") if (storage / "refs").is_dir() else []:
            if ref.is_file():
                refs.setdefault(ref.read_text().strip(), []).append(str(ref.relative_to(storage / "refs")))
        for snap in sorted((storage / "snapshots").glob("*")):
            if _is_gpt_oss(snap):
                names = ",".join(refs.get(snap.name, []))
                rows.append({"name": _display_name(repo_id), "kind": "snapshot", "repo": repo_id,
                             "revision": snap.name[:12] + (f" ({names})" if names else ""),
                             "bytes": _snapshot_size(snap), "path": str(snap), "complete": not missing_files(snap)})
    for folder, repo_id in _read_pulls().items():
        if _is_gpt_oss(Path(folder)):
            rows.append({"name": _display_name(repo_id), "kind": "snapshot (--dir)", "repo": repo_id,
                         "revision": _dir_revision(Path(folder)), "bytes": _snapshot_size(Path(folder)),
                         "path": folder, "complete": not missing_files(Path(folder))})
    for gguf in sorted(paths.models_dir().glob("*.gguf")):
        rows.append({"name": gguf.stem, "kind": "gguf", "repo": None, "revision": "-",
                     "bytes": gguf.stat().st_size, "path": str(gguf), "complete": True})
    return rows


def _dir_revision(folder: Path) -> str:
    meta = folder / ".cache" / "huggingface" / "download" / "config.json.metadata"
    try:
        return meta.read_text().split("\n")[0][:12]
    except OSError:
        return "-"


@dataclass
class ListOptions:
    """Everything `gptoss list` was asked for."""

    as_json: bool = False


def run_list(opts: ListOptions) -> list[dict]:
    """Print the local snapshots and GGUFs as a table (or one JSON document)."""
    rows = entries()
    if opts.as_json:
        ui.print_json({"models": rows})
    elif not rows:
        ui.info("nothing here yet: run `gptoss pull 20b`.")
    else:
        ui.table(None, ["name", "kind", "revision", "size", "path"],
                 [(r["name"], r["kind"] + ("" if r["complete"] else ", incomplete"), r["revision"],
                   ui.human_bytes(r["bytes"]), r["path"]) for r in rows], right=["size"])
    return rows


def targets(model: str, gguf_only: bool) -> list[Path]:
    """What `rm MODEL` deletes: a .gguf path, or the GGUFs and (unless gguf_only) the snapshots of a model."""
    path = Path(model).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        return [path]
    if path.is_dir() and str(path.absolute()) in _read_pulls():
        return [] if gguf_only else [path.absolute()]
    repo_id = paths.repo_id_for(model)
    found = paths.model_ggufs(model)
    if not gguf_only:
        if hub.repo_storage(repo_id).is_dir():
            found.append(hub.repo_storage(repo_id))
        found += [Path(f) for f, r in _read_pulls().items() if r == repo_id and Path(f).is_dir()]
    return found


@dataclass
class RmOptions:
    """Everything `gptoss rm` was asked for."""

    model: str
    gguf_only: bool = False   # --gguf-only: keep the downloaded snapshot
    yes: bool = False         # --yes: do not ask
    as_json: bool = False


def run_rm(opts: RmOptions) -> dict:
    """Delete a model's local files after showing them and asking (or --yes)."""
    found = targets(opts.model, opts.gguf_only)
    if not found:
        raise ModelNotFound(opts.model, "nothing local to remove" + (" (GGUF files only)" if opts.gguf_only else ""),
                            "See `gptoss list`")
    sizes = {p: tree_bytes(p) for p in found}
    total = sum(sizes.values())
    for p in found:
        ui.info(f"  {ui.human_bytes(sizes[p]):>10}  {p}")
    if not opts.yes:
        if not sys.stdin.isatty():
            raise BadInputError(opts.model, "refusing to delete without confirmation", "Pass --yes")
        if not ui.confirm(f"Delete {len(found)} item(s), {ui.human_bytes(total)}?"):
            raise BadInputError(opts.model, "not confirmed", "Nothing was deleted")
    for p in found:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
    _forget([p for p in found if p.is_dir() or not p.exists()])
    report = {"removed": [str(p) for p in found], "freed_bytes": total}
    ui.info(f"freed {ui.human_bytes(total)}")
    if opts.as_json:
        ui.print_json(report)
    else:
        for p in found:
            ui.result(f"{p}\n")
    return report


def _forget(removed: list[Path]) -> None:
    data = _read_pulls()
    kept = {f: r for f, r in data.items() if Path(f) not in removed}
    if kept != data:
        target = paths.state_dir() / PULLS_FILE
        target.write_text(json.dumps(kept, indent=2))
