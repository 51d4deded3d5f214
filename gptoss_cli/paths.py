"""File locations and the one model resolver every command uses (see shared CONVENTIONS)."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

from converters.errors import BadInputError, ModelNotFound

SHORT_NAMES = {"20b": "openai/gpt-oss-20b", "120b": "openai/gpt-oss-120b"}
LAST_FILE = "last.json"


def gptoss_home() -> Path:
    """$GPTOSS_HOME, default ~/.local/share/gptoss."""
    return Path(os.environ.get("GPTOSS_HOME") or Path.home() / ".local/share/gptoss").expanduser()


def models_dir() -> Path:
    """Where GGUF files go: $GPTOSS_HOME/models."""
    return gptoss_home() / "models"


def state_dir() -> Path:
    """Chat history and last-used models: $XDG_STATE_HOME/gptoss (default ~/.local/state/gptoss)."""
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local/state"
    return Path(base).expanduser() / "gptoss"


def repo_id_for(name: str) -> str:
    """Map a short name (20b, 120b) to its Hugging Face repo id; other names pass through."""
    return SHORT_NAMES.get(name.lower(), name)


def short_name(repo_or_folder: str) -> str:
    """The size tag used in file names: 20b for openai/gpt-oss-20b, else the last path part."""
    tail = repo_or_folder.rstrip("/").split("/")[-1]
    tail = tail.split("--")[-1]
    return tail[len("gpt-oss-"):] if tail.lower().startswith("gpt-oss-") else tail


def repo_stem(repo_id: str) -> str:
    """The model part of a repo's GGUF names: its name (openai/gpt-oss-20b -> gpt-oss-20b)."""
    return repo_id.rstrip("/").split("/")[-1]


def folder_stem(folder: Path) -> str:
    """The model part of a snapshot folder's GGUF names: the repo's name for a Hugging Face cache snapshot
    (.../models--org--name/snapshots/<commit>), else the folder's name; never a commit hash."""
    parts = Path(folder).absolute().parts
    if len(parts) >= 3 and parts[-2] == "snapshots" and parts[-3].startswith("models--"):
        return parts[-3].split("--")[-1]
    name = parts[-1]
    if re.fullmatch(r"[0-9a-f]{40}", name) and len(parts) > 1:
        return parts[-2]  # a snapshot copied out of the cache keeps its commit as its name
    return name


def default_gguf_path(stem: str, recipe: str) -> Path:
    """<stem>-<recipe>.gguf in the models folder (gpt-oss-20b-mxfp4.gguf for openai/gpt-oss-20b)."""
    return models_dir() / f"{stem}-{recipe}.gguf"


def model_ggufs(arg: str) -> list[Path]:
    """GGUFs in the models folder written for a model name (20b, a repo id, gpt-oss-20b-ft), oldest first:
    exactly <stem>-<recipe>[-custom].gguf, so `20b` never picks up a fine-tune's gpt-oss-20b-ft-*.gguf."""
    from converters.recipes import RECIPES

    stem = repo_stem(repo_id_for(arg))
    stems = {stem} if stem.lower().startswith("gpt-oss-") else {stem, f"gpt-oss-{stem}"}
    names = {f"{s}-{r}{c}.gguf" for s in stems for r in RECIPES for c in ("", "-custom")}
    found = [p for p in models_dir().glob("*.gguf") if p.name in names] if models_dir().is_dir() else []
    return sorted(found, key=lambda p: p.stat().st_mtime)


def remember(kind: str, value: str | Path) -> None:
    """Record the most recent snapshot or GGUF, so commands can default to it."""
    path = state_dir() / LAST_FILE
    data = _read_last()
    data[kind] = str(value)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def recall(kind: str) -> str | None:
    """The most recently recorded snapshot or GGUF, if any."""
    return _read_last().get(kind)


def _read_last() -> dict:
    try:
        return json.loads((state_dir() / LAST_FILE).read_text())
    except (OSError, ValueError):
        return {}


def cached_snapshot(repo_id: str, revision: str | None = None) -> Path | None:
    """The local HF-cache snapshot folder of repo_id (with a config.json), or None."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        folder = Path(snapshot_download(repo_id, revision=revision, local_files_only=True,
                                        allow_patterns=["config.json"]))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None
    return folder if (folder / "config.json").is_file() else None


def resolve_snapshot(arg: str | None) -> Path:
    """A checkpoint folder from a folder path, short name, repo id, or (None) the last pull."""
    if arg is None:
        last = recall("snapshot")
        if last and Path(last).is_dir():
            return Path(last)
        raise ModelNotFound(None, "no model given and nothing pulled yet",
                            "Pass a snapshot folder, or run `gptoss pull 20b` first")
    path = Path(arg).expanduser()
    if path.is_dir():
        return path
    if path.suffix == ".gguf" or path.exists():
        raise ModelNotFound(arg, "not a Hugging Face snapshot folder")
    repo_id = repo_id_for(arg)
    found = cached_snapshot(repo_id)
    if found is None:
        raise ModelNotFound(repo_id, "not downloaded yet", f"Run `gptoss pull {arg}` first")
    return found


def resolve_gguf(arg: str | None) -> Path:
    """A GGUF file from a path, a model name (its newest <stem>-<recipe>.gguf), or (None) the last one written."""
    if arg is None:
        last = recall("gguf")
        if last and Path(last).is_file():
            return Path(last)
        raise ModelNotFound(None, "no model given and no GGUF written yet",
                            "Pass a .gguf path, or run `gptoss quantize` first")
    path = Path(arg).expanduser()
    if path.is_file():
        return path
    if path.suffix == ".gguf":
        if path.name == arg and (models_dir() / arg).is_file():
            return models_dir() / arg  # a bare file name (what shell completion offers): the models folder's
        raise ModelNotFound(path, "no such file", "Check the path, or see `gptoss list`")
    candidates = model_ggufs(arg)
    if not candidates:
        raise ModelNotFound(arg, f"no GGUF for it in {models_dir()}", f"Run `gptoss quantize {arg}` first")
    return candidates[-1]


def read_text_arg(text_file: str, what: str) -> str:
    """The text of a --text argument: a UTF-8 file, or standard input for '-'."""
    if text_file == "-":
        return sys.stdin.read()
    path = Path(text_file).expanduser()
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise BadInputError(path, f"{what} not found", "Pass --text FILE with plain text") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInputError(path, f"cannot read the text ({exc})", "Pass a UTF-8 text file") from None
