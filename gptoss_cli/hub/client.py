"""Hugging Face Hub client for `gptoss pull`: the plan (what to fetch, what is here), disk preflight, shared types.

Transfers (transfer.py) use huggingface_hub's own plain-HTTP `http_get` (Range resume) into a stable
`<etag>.incomplete` file, so an interrupted pull resumes on the next run (huggingface_hub 2.x's own downloads
use per-process temp files that are deleted on failure, so they never resume across runs). Finished blobs land
in the standard HF cache layout, linked into the snapshot with huggingface_hub's own symlink helper, so `hf`,
transformers and llama.cpp tools see them. Everything the hub sends is checked before it names a file.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from converters.disk import free_bytes
from converters.errors import BadInputError, GptossError, RunFailure
from gptoss_cli.hub.errors import HubDataError, NotEnoughSpace, UnsafeFileName, translate

ALLOW_NAMES = ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
               "special_tokens_map.json", "chat_template.jinja", "model.safetensors.index.json",
               "model.safetensors")
ALLOW_GLOBS = ("model-*.safetensors",)
SPACE_MARGIN = 512 * 1024**2
# huggingface_hub's http_get reads and writes in DOWNLOAD_CHUNK_SIZE pieces (10 MiB by default): bytes of an
# unfinished piece are lost on a cut or Ctrl-C, and bars move in those steps. 1 MiB keeps both fine-grained.
CHUNK_SIZE = 1 << 20


def endpoint() -> str:
    """The hub URL: $HF_ENDPOINT or https://huggingface.co (read per call, not at import)."""
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def shown_endpoint() -> str:
    """The hub URL as printed: without any user:password@ it carries."""
    parts = urlparse(endpoint())
    return parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()


def same_origin(a: str, b: str) -> bool:
    """Whether two URLs share scheme, host and port (auth headers never leave the hub's origin)."""
    pa, pb = urlparse(a), urlparse(b)
    return (pa.scheme, pa.hostname, pa.port) == (pb.scheme, pb.hostname, pb.port)


def check_hex(value: object, field_name: str, where: str, lengths: tuple[int, ...] = (40, 64)) -> str:
    """Return value if it is lowercase hex of one of the given lengths (the hub's forms), else refuse the repo.

    Commit shas and git blob ids are 40 hex digits, LFS sha256 64; such values name files and folders here."""
    if isinstance(value, str) and len(value) in lengths and re.fullmatch(r"[0-9a-f]+", value):
        return value
    shown = repr(value)[:50]
    raise HubDataError(where, f"the hub sent {field_name} {shown}, not {' or '.join(map(str, lengths))} hex digits",
                       "Refusing this repo; check HF_ENDPOINT, or report it to the mirror's owner")


def cache_dir() -> Path:
    """The HF hub cache: $HF_HUB_CACHE, else $HF_HOME/hub, else ~/.cache/huggingface/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.path.expandvars(os.environ["HF_HUB_CACHE"])).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface"
    return Path(os.path.expandvars(str(home))).expanduser() / "hub"


def offline() -> bool:
    """Whether HF_HUB_OFFLINE forbids network access."""
    return os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "ON", "YES", "TRUE"}


def resolve_token(explicit: str | None) -> str | None:
    """--token, else $HF_TOKEN, else the token saved by `hf auth login`."""
    if explicit:
        return explicit
    from huggingface_hub import get_token
    return os.environ.get("HF_TOKEN") or get_token()


def repo_storage(repo_id: str) -> Path:
    """The cache folder of a model repo: <cache>/models--org--name."""
    return cache_dir() / ("models--" + repo_id.replace("/", "--"))


def wanted(name: str) -> bool:
    """Whether a repo file is one a GGUF converter needs (root files only: never original/ or metal/)."""
    return "/" not in name and (name in ALLOW_NAMES or any(fnmatch.fnmatchcase(name, g) for g in ALLOW_GLOBS))


def check_name(name: str) -> None:
    """Refuse repo file names that could escape the target folder."""
    parts = name.split("/")
    if (not name or name.startswith("/") or "\\" in name or "\0" in name or re.match(r"^[A-Za-z]:", name)
            or any(p in ("", ".", "..") for p in parts)):
        raise UnsafeFileName(name, "the repo lists a file name that escapes the download folder",
                             "Refusing to download from this repo; report it to its owner")


@dataclass
class DownloadFile:
    """One file to pull: remote metadata plus what is already on disk."""

    name: str
    known_size: int | None  # None only until HEAD metadata fills in what a listing left out
    sha256: str | None  # LFS files
    blob_id: str | None  # git blob sha1 (the ETag of non-LFS files)
    present: bool = False
    partial: int = 0
    etag: str = ""  # the hub's ETag: sha256 for LFS files, git blob sha1 otherwise

    def __post_init__(self) -> None:
        self.etag = self.etag or self.sha256 or self.blob_id or ""

    @property
    def size(self) -> int:
        """The file's bytes: known for every file of a DownloadPlan that plan_download returned."""
        assert self.known_size is not None, f"{self.name}: size read before plan_download completed the listing"
        return self.known_size


@dataclass
class DownloadPlan:
    """What a pull will fetch, and where (plan_download builds it)."""

    repo_id: str
    revision: str
    commit: str
    target: Path  # the snapshot folder (cache) or --dir
    local_dir: Path | None
    files: list[DownloadFile]
    skipped: list[tuple[str, int]] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def present_bytes(self) -> int:
        return sum(f.size if f.present else f.partial for f in self.files)

    @property
    def download_bytes(self) -> int:
        return self.total_bytes - self.present_bytes

    @property
    def up_to_date(self) -> bool:
        return all(f.present for f in self.files)

    def to_json(self) -> dict:
        """The plan as a JSON-ready dict."""
        return {"repo": self.repo_id, "revision": self.revision, "commit": self.commit, "path": str(self.target),
                "total_bytes": self.total_bytes, "present_bytes": self.present_bytes,
                "download_bytes": self.download_bytes,
                "skipped": {"files": len(self.skipped), "bytes": sum(s for _, s in self.skipped)},
                "files": [{"name": f.name, "size": f.size, "sha256": f.sha256, "present": f.present,
                           "partial_bytes": f.partial} for f in self.files]}


def blob_path(plan: DownloadPlan, etag: str) -> Path:
    """A blob of the plan's repo in the HF cache."""
    return repo_storage(plan.repo_id) / "blobs" / etag


def has_blob(plan: DownloadPlan, f: DownloadFile) -> bool:
    """Whether the cache already holds the file's bytes (a blob of the wrong size, e.g. empty, does not count)."""
    blob = blob_path(plan, f.etag)
    return blob.is_file() and blob.stat().st_size == f.size


def partial_path(plan: DownloadPlan, f: DownloadFile) -> Path:
    """Where a file's unfinished bytes live between runs (huggingface_hub's <etag>.incomplete naming)."""
    if plan.local_dir is None:
        return blob_path(plan, f.etag + ".incomplete")
    return plan.local_dir / ".cache" / "huggingface" / "download" / f"{f.name}.{f.etag}.incomplete"


def _is_present(plan: DownloadPlan, f: DownloadFile) -> bool:
    path = plan.target / f.name
    if not path.is_file() or path.stat().st_size != f.size:  # an empty or cut file is never done
        return False
    if plan.local_dir is None:
        return True
    from huggingface_hub._local_folder import read_download_metadata
    meta = read_download_metadata(plan.local_dir, f.name)
    return meta is not None and meta.etag == f.etag


def plan_download(repo_id: str, revision: str | None, local_dir: Path | None, token: str | None) -> DownloadPlan:
    """List the repo on the hub, pick the files a converter needs, and see what is already here."""
    from huggingface_hub import HfApi

    revision = revision or "main"
    try:
        info = HfApi(endpoint=endpoint(), token=token or False).model_info(
            repo_id, revision=revision, files_metadata=True)
    except Exception as exc:  # noqa: BLE001 - every hub failure becomes one typed error
        raise translate(exc, repo_id, revision, token) from exc
    if not info.sha:
        raise RunFailure(repo_id, "the hub returned no commit for this revision", "Check HF_ENDPOINT")
    check_hex(info.sha, "the commit sha", repo_id, (40,))
    files, skipped = [], []
    for s in info.siblings or []:
        check_name(s.rfilename)
        size = s.lfs.size if s.lfs else s.size
        if wanted(s.rfilename):
            files.append(_plan_file(repo_id, s.rfilename, size, s.lfs.sha256 if s.lfs else None, s.blob_id))
        else:
            skipped.append((s.rfilename, size or 0))
    names = {f.name for f in files}
    if "config.json" not in names or not names & {"model.safetensors.index.json", "model.safetensors"}:
        raise BadInputError(repo_id, "not a safetensors checkpoint (no config.json or model safetensors)",
                            "Pass 20b, 120b or a repo id of a gpt-oss model")
    _complete_from_head(repo_id, info.sha, token, [f for f in files if f.known_size is None or not f.etag])
    target = local_dir if local_dir is not None else repo_storage(repo_id) / "snapshots" / info.sha
    plan = DownloadPlan(repo_id, revision, info.sha, target, local_dir, files, skipped)
    for f in files:
        f.present = _is_present(plan, f)
        part = partial_path(plan, f)
        f.partial = 0 if f.present or not part.is_file() else min(part.stat().st_size, f.size)
        if not f.present and local_dir is None and has_blob(plan, f):
            f.partial = f.size  # same bytes already cached for another revision: only a link is missing
    return plan


def _plan_file(repo_id: str, name: str, size: object, sha256: object, blob_id: object) -> DownloadFile:
    """A listed file, its size, sha256 and blob id checked to be what the hub sends (they name files here)."""
    where = f"{repo_id}: {name}"
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise HubDataError(where, f"the listing gives size {repr(size)[:30]}, not a byte count",
                           "Refusing this repo; check HF_ENDPOINT, or report it to the mirror's owner")
    sha = check_hex(sha256, "the LFS sha256", where, (64,)) if sha256 is not None else None
    blob = check_hex(blob_id, "the blobId", where, (40,)) if blob_id is not None else None
    return DownloadFile(name, size, sha, blob)


def _complete_from_head(repo_id: str, commit: str, token: str | None, files: list[DownloadFile]) -> None:
    """A listing without sizes or hashes (a mirror that ignores blobs=true): take them from each file's HEAD
    metadata, as hf_hub_download does (X-Linked-Size / X-Linked-Etag for LFS files, the git blob id otherwise)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    def head(f: DownloadFile) -> None:
        url = hf_hub_url(repo_id, f.name, revision=commit, endpoint=endpoint())
        meta = get_hf_file_metadata(url, token=token or False, endpoint=endpoint())
        if meta.size is None or meta.size < 0 or not meta.etag:
            raise RunFailure(f.name, "the hub gave neither a size nor a checksum for this file",
                             "Try again later, or pull from huggingface.co (unset HF_ENDPOINT)")
        if meta.xet_file_data is not None and meta.etag == meta.xet_file_data.file_hash:
            raise RunFailure(f.name, "the hub gave a Xet hash for this file, no sha256 to verify it against",
                             "Try again later, or pull from huggingface.co (unset HF_ENDPOINT)")
        f.known_size = meta.size
        etag = check_hex(meta.etag, "the ETag", f"{repo_id}: {f.name}")
        if len(etag) == 64:
            f.sha256 = etag
        else:
            f.blob_id = etag
        f.etag = etag

    if not files:
        return
    try:
        with ThreadPoolExecutor(max_workers=min(8, len(files)), thread_name_prefix="head") as pool:
            list(pool.map(head, files))
    except GptossError:
        raise
    except Exception as exc:  # noqa: BLE001 - every hub failure becomes one typed error
        raise translate(exc, repo_id, commit, token) from exc


def preflight(plan: DownloadPlan, extra: int = 0) -> int:
    """Raise NotEnoughSpace unless the download (plus `extra` bytes and a margin) fits; return free bytes."""
    where = plan.local_dir or cache_dir()
    free = free_bytes(where)
    need = plan.download_bytes + extra
    if need and free < need + SPACE_MARGIN:
        raise NotEnoughSpace(where, f"needs {_gb(need)} plus a {_gb(SPACE_MARGIN)} margin, {_gb(free)} free",
                             "Free some space, or pass --dir on a bigger disk")
    return free


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def assert_gpt_oss(config_path: Path, repo_id: str) -> None:
    """Refuse a repo whose config.json is not a gpt-oss model."""
    try:
        model_type = json.loads(config_path.read_text()).get("model_type")
    except (OSError, ValueError) as exc:
        raise BadInputError(repo_id, f"config.json is unreadable ({exc})") from exc
    if model_type != "gpt_oss":
        raise BadInputError(repo_id, f"config.json says model_type {model_type!r}, not 'gpt_oss'",
                            "gptoss only handles gpt-oss models: try 20b or 120b")


@dataclass
class Callbacks:
    """Progress events; called from worker threads."""

    start: Callable[[str, int, int], None] = lambda name, total, done: None
    advance: Callable[[str, int], None] = lambda name, n: None
    finish: Callable[[str, int], None] = lambda name, size: None
    retry: Callable[[str, str], None] = lambda name, why: None
    stopping: Callable[[], None] = lambda: None  # Ctrl-C: no more bytes are written from now on


@dataclass
class Retry:
    """How a file's transfer is retried (fresh link from the hub, resuming the partial): up to `tries` failures
    in a row without a new byte, waiting `wait` seconds before the first retry and twice as long each time after."""

    tries: int = 5
    wait: float = 1.0
