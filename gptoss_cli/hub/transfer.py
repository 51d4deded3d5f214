"""One file's transfer for `gptoss pull`: resume a stable partial with huggingface_hub's http_get, hash it
as it streams (sha256 for LFS files, the git blob id otherwise), retry once on a mismatch, then place it
in the HF cache (linked by hf_hub_download) or in the --dir folder (with huggingface_hub's metadata)."""

from __future__ import annotations

import hashlib
import os
import re
import threading
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

from gptoss_cli.hub.client import (Callbacks, Plan, PlanFile, blob_path, cache_dir, endpoint, has_blob,
                                   partial_path, repo_storage)
from gptoss_cli.hub.errors import ChecksumMismatch, HubUnavailable


class _Cancelled(Exception):
    """Another worker failed or the user pressed Ctrl-C."""


class _Quiet:
    """A do-nothing tqdm for http_get: gptoss draws its own bars."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __enter__(self) -> "_Quiet":
        return self

    def __exit__(self, *exc) -> bool:
        return False

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


def same_origin(a: str, b: str) -> bool:
    """Whether two URLs share scheme, host and port (auth headers never leave the hub's origin)."""
    pa, pb = urlparse(a), urlparse(b)
    return (pa.scheme, pa.hostname, pa.port) == (pb.scheme, pb.hostname, pb.port)


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
            http_get(url, writer, resume_size=have, headers=headers, expected_size=f.size,
                     displayed_filename=f.name, tqdm_class=_Quiet)
    except BaseException:
        if partial.is_file() and partial.stat().st_size == 0:
            partial.unlink()
        raise  # a non-empty partial stays: the next run resumes from it
    return writer.hasher.hexdigest() if writer.hasher is not None else None


def fetch_file(plan: Plan, f: PlanFile, token: str | None, verify: bool, cb: Callbacks,
               cancel: threading.Event) -> None:
    """Fetch one file into the cache (or --dir), resuming its partial; sha256-check it, retry once on mismatch."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.utils import WeakFileLock, build_hf_headers

    url = hf_hub_url(plan.repo_id, f.name, revision=plan.commit, endpoint=endpoint())
    meta = get_hf_file_metadata(url, token=token or False, endpoint=endpoint())
    if meta.etag and meta.etag != f.etag:
        if f.sha256:
            raise HubUnavailable(f.name, "the hub's ETag differs from its sha256 listing", "Try again in a minute")
        f.etag = meta.etag  # a regular (non-LFS) file: hf names the blob by the ETag the server sends
    headers = build_hf_headers(token=token or False)
    if not same_origin(url, meta.location):
        headers.pop("authorization", None)  # signed CDN URL: the token stays on the hub
    partial = partial_path(plan, f)
    lock = (repo_storage(plan.repo_id).parent / ".locks" / repo_storage(plan.repo_id).name / f"{f.etag}.lock"
            if plan.local_dir is None else partial.with_suffix(".lock"))
    lock.parent.mkdir(parents=True, exist_ok=True)
    expected = f.sha256 or f.blob_id
    with WeakFileLock(lock):
        for attempt in (1, 2):
            if plan.local_dir is None and has_blob(plan, f):
                break  # cached by another revision (or another process just finished it)
            digest = _transfer(meta.location, headers, partial, f, verify, cb, cancel)
            got = partial.stat().st_size if partial.is_file() else 0
            if got != f.size:  # what http_get does not check when it is told nothing is missing
                raise HubUnavailable(f.name, f"received {got} bytes, the hub announced {f.size}",
                                     "Run the same command again; it resumes")
            if digest is None or digest == expected:
                break
            partial.unlink(missing_ok=True)
            if attempt == 2:
                kind = "sha256" if f.sha256 else "git blob id"
                raise ChecksumMismatch(f.name, f"{kind} {digest[:12]}... but the hub lists {expected[:12]}..., twice",
                                       "The download was deleted; try again later or report it to the repo owner")
            cb.retry(f.name, "checksum mismatch, downloading it again")
        if plan.local_dir is None:
            if not has_blob(plan, f):
                os.replace(partial, blob_path(plan, f.etag))
        else:
            from huggingface_hub._local_folder import write_download_metadata
            dest = plan.local_dir / f.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(partial, dest)
            write_download_metadata(plan.local_dir, f.name, plan.commit, f.etag)
    if plan.local_dir is None:  # links snapshots/<commit>/<name> to the blob, the way every HF tool expects
        hf_hub_download(plan.repo_id, f.name, revision=plan.commit, cache_dir=cache_dir(),
                        endpoint=endpoint(), token=token or False)
    cb.finish(f.name, f.size)
