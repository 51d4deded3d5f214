"""One file's transfer for `gptoss pull`: resume a stable partial with huggingface_hub's http_get, hash it
as it streams (sha256 for LFS files, the git blob id otherwise), retry once on a mismatch, then place it
in the HF cache (a blob linked into the snapshot) or in the --dir folder (with huggingface_hub's metadata).

LFS files (Xet-backed ones too) redirect to a download host on a signed link that expires. A drop, an
expired or refused link, or a transient status is retried through the hub, which hands out a fresh link,
resuming from the partial; only the hub's own 401/403 mean the token is wrong."""

from __future__ import annotations

import hashlib
import os
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from gptoss_cli.hub.client import (
    Callbacks,
    Plan,
    PlanFile,
    Retry,
    blob_path,
    check_hex,
    endpoint,
    has_blob,
    partial_path,
    repo_storage,
    same_origin,
)
from gptoss_cli.hub.errors import ChecksumMismatch, HubUnavailable, from_hub

T = TypeVar("T")


class _Cancelled(Exception):
    """Another worker failed or the user pressed Ctrl-C."""


class _Quiet:
    """A do-nothing tqdm for http_get: gptoss draws its own bars."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __enter__(self) -> _Quiet:
        return self

    def __exit__(self, *exc) -> None:
        pass

    def update(self, n: float = 1) -> None:
        pass

    def close(self) -> None:
        pass


class _Writer:
    """File wrapper for http_get: hashes and reports every chunk as it is written."""

    def __init__(self, fh, hasher, advance: Callable[[int], None], cancel: threading.Event, fresh) -> None:
        self.fh, self.hasher, self.advance, self.cancel, self.fresh = fh, hasher, advance, cancel, fresh

    def write(self, chunk: bytes) -> int:
        if self.cancel.is_set():
            raise _Cancelled()
        if self.hasher is not None:
            self.hasher.update(chunk)
        n = self.fh.write(chunk)
        self.advance(len(chunk))
        return n

    def tell(self) -> int:
        return self.fh.tell()

    def seek(self, pos: int, whence: int = 0) -> int:
        return self.fh.seek(pos, whence)

    def truncate(self, size: int | None = None) -> int:
        # http_get truncates only when the server ignored our Range header: hashing restarts from byte 0.
        self.advance(-self.fh.tell())
        self.hasher = self.fresh()
        return self.fh.truncate(size)


def _new_hasher(f: PlanFile, verify: bool):
    if not verify:
        return None
    if f.sha256:
        return hashlib.sha256()
    if f.blob_id and re.fullmatch(r"[0-9a-f]{40}", f.blob_id):
        h = hashlib.sha1()  # git blob id: sha1 of "blob <size>\0" + content
        h.update(b"blob %d\0" % f.size)
        return h
    return None


def _transfer(url: str, headers: dict, partial: Path, f: PlanFile, verify: bool, cb: Callbacks,
              cancel: threading.Event) -> str | None:
    """Download (or resume) url into partial with huggingface_hub's http_get; return its hex digest."""
    from huggingface_hub.file_download import http_get

    have = partial.stat().st_size if partial.is_file() else 0
    if have > f.size:
        partial.unlink()
        have = 0
    hasher = _new_hasher(f, verify)
    if hasher is not None and have:
        with open(partial, "rb") as fh:
            while block := fh.read(8 << 20):
                hasher.update(block)
    cb.start(f.name, f.size, have)
    partial.parent.mkdir(parents=True, exist_ok=True)
    writer_args = (lambda n: cb.advance(f.name, n), cancel, lambda: _new_hasher(f, verify))
    try:
        with open(partial, "ab") as fh:
            writer = _Writer(fh, hasher, *writer_args)
            # _nb_retries=0: a drop comes back to _fetch_retrying, which retries through the hub (a fresh link)
            http_get(url, writer,  # type: ignore[arg-type]  # _Writer has the BinaryIO methods http_get calls
                     resume_size=have, headers=headers, expected_size=f.size,
                     displayed_filename=f.name, tqdm_class=_Quiet, _nb_retries=0)
    except BaseException:
        if partial.is_file() and partial.stat().st_size == 0:
            partial.unlink()
        raise  # a non-empty partial stays: the next run resumes from it
    return writer.hasher.hexdigest() if writer.hasher is not None else None


TRANSIENT = (408, 429, 500, 502, 503, 504)
REFUSED = (401, 403, 410)  # from the download host: the signed link expired or was revoked; a fresh one helps


def _resolve(plan: Plan, f: PlanFile, token: str | None) -> tuple[str, dict]:
    """Ask the hub where the file's bytes are now (a signed download link for LFS/Xet files); return it and the
    headers to send there (the token only to the hub's own origin)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.utils import build_hf_headers

    url = hf_hub_url(plan.repo_id, f.name, revision=plan.commit, endpoint=endpoint())
    meta = get_hf_file_metadata(url, token=token or False, endpoint=endpoint())
    if not f.sha256 and meta.etag and meta.etag != f.etag:  # a regular file: hf names its blob by the ETag
        f.etag = check_hex(meta.etag, "the ETag", f"{plan.repo_id}: {f.name}")
    # LFS files are named and verified by the listing's sha256; their ETag may be a Xet hash, never compared.
    headers = build_hf_headers(token=token or False)
    if not same_origin(url, meta.location):
        headers.pop("authorization", None)  # signed download link: the token stays on the hub
    return meta.location, headers


def _why_retry(exc: BaseException) -> str | None:
    """Why a failed transfer is worth another try with a fresh link, or None when it is not."""
    import httpx2
    from huggingface_hub.errors import HfHubHTTPError

    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        status, hub = exc.response.status_code, from_hub(exc)
        if status in TRANSIENT or (status in REFUSED and not hub):
            return f"{'the hub' if hub else 'the download host'} answered HTTP {status}"
        return None
    if isinstance(exc, httpx2.TransportError):
        return f"connection lost ({type(exc).__name__})"
    if isinstance(exc, OSError) and exc.errno is None and "Consistency check failed" in str(exc):
        return "the connection ended early"
    return None


def _retrying(action: Callable[[], T], f: PlanFile, cb: Callbacks, cancel: threading.Event, retry: Retry,
              progress: Callable[[], int] = lambda: 0) -> T:
    """Run action; after a drop, an expired or refused download link or a transient status, wait and run it
    again, at most retry.tries times in a row without progress (new bytes in the partial)."""
    misses = 0
    while True:
        before = progress()
        try:
            return action()
        except Exception as exc:  # noqa: BLE001 - _why_retry picks the retryable ones
            why = _why_retry(exc)
            if why is None:
                raise
            misses = 0 if progress() > before else misses + 1
            if misses > retry.tries:
                raise HubUnavailable(f.name, f"{why}, {misses} times in a row",
                                     "Try again later; a rerun resumes where this one stopped") from exc
            cb.retry(f.name, f"{why}; retrying")
            if cancel.wait(retry.wait * 2 ** (misses - 1) if misses else 0):
                raise _Cancelled() from exc


def fetch_file(plan: Plan, f: PlanFile, token: str | None, verify: bool, cb: Callbacks,
               cancel: threading.Event, retry: Retry) -> None:
    """Fetch one file into the cache (or --dir), resuming its partial; sha256-check it, retry once on mismatch."""
    from huggingface_hub.file_download import _create_symlink
    from huggingface_hub.utils import WeakFileLock

    links = [_retrying(lambda: _resolve(plan, f, token), f, cb, cancel, retry)]
    partial = partial_path(plan, f)

    def transfer() -> str | None:  # every try after the first asks the hub for a fresh link
        location, headers = links.pop() if links else _resolve(plan, f, token)
        return _transfer(location, headers, partial, f, verify, cb, cancel)

    lock = (repo_storage(plan.repo_id).parent / ".locks" / repo_storage(plan.repo_id).name / f"{f.etag}.lock"
            if plan.local_dir is None else partial.with_suffix(".lock"))
    lock.parent.mkdir(parents=True, exist_ok=True)
    expected = f.sha256 or f.blob_id or ""
    with WeakFileLock(lock):
        for pass_ in (1, 2):
            if plan.local_dir is None and has_blob(plan, f):
                break  # cached by another revision (or another process just finished it)
            digest = _retrying(transfer, f, cb, cancel, retry,
                               lambda: partial.stat().st_size if partial.is_file() else 0)
            got = partial.stat().st_size if partial.is_file() else 0
            if got != f.size:  # what http_get does not check when it is told nothing is missing
                raise HubUnavailable(f.name, f"received {got} bytes, the hub announced {f.size}",
                                     "Run the same command again; it resumes")
            if digest is None or digest == expected:
                break
            partial.unlink(missing_ok=True)
            if pass_ == 2:
                kind = "sha256" if f.sha256 else "git blob id"
                raise ChecksumMismatch(f.name, f"{kind} {digest[:12]}... but the hub lists {expected[:12]}..., twice",
                                       "The download was deleted; try again later or report it to the repo owner")
            cb.retry(f.name, "checksum mismatch, downloading it again")
        if plan.local_dir is None:
            if not has_blob(plan, f):
                os.replace(partial, blob_path(plan, f.etag))
            # snapshots/<commit>/<name> -> ../../blobs/<etag>, the layout every HF tool reads
            link = plan.target / f.name
            link.parent.mkdir(parents=True, exist_ok=True)
            _create_symlink(str(blob_path(plan, f.etag)), str(link), new_blob=False)
        else:
            from huggingface_hub._local_folder import write_download_metadata
            dest = plan.local_dir / f.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(partial, dest)
            write_download_metadata(plan.local_dir, f.name, plan.commit, f.etag)
    cb.finish(f.name, f.size)
