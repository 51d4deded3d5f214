"""A loopback Hugging Face Hub (127.0.0.1 only) speaking the HTTP API huggingface_hub uses.

Serves `GET /api/models/{repo}[/revision/{rev}]` (with `blobs=true` file sizes and LFS sha256),
`GET /api/models/{repo}/tree/{rev}`, and `HEAD`/`GET /{repo}/resolve/{rev}/{file}`: regular files answer
200 with their git-blob ETag; LFS files answer 302 to a second "CDN" origin (another port) with
X-Linked-Etag / X-Linked-Size, where `GET /cdn/{sha256}` honours Range requests. No Xet headers, so
clients use plain HTTP. Faults (cut connections, 5xx, corrupted bytes) and access rules (private, gated)
are switchable per test; every request and every body byte served is counted.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

LFS_SUFFIXES = (".safetensors", ".bin", ".model")


def git_blob_id(data: bytes) -> str:
    """The git object id of a blob (what the hub reports as blobId / ETag of a regular file)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class RepoFile:
    """One file of a fixture repo, in memory or on disk."""

    name: str
    source: bytes | Path
    lfs: bool
    size: int = 0
    sha256: str = ""
    blob_id: str = ""

    def __post_init__(self) -> None:
        if isinstance(self.source, Path):
            self.size = self.source.stat().st_size
            h = hashlib.sha256()
            with open(self.source, "rb") as f:
                while block := f.read(16 << 20):
                    h.update(block)
            self.sha256 = h.hexdigest()
        else:
            self.size, self.sha256 = len(self.source), hashlib.sha256(self.source).hexdigest()
        if self.lfs:
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {self.size}\n"
            self.blob_id = git_blob_id(pointer.encode())
        else:
            self.blob_id = git_blob_id(self.read(0, self.size))

    @property
    def etag(self) -> str:
        return self.sha256 if self.lfs else self.blob_id

    def read(self, start: int, end: int) -> bytes:
        if isinstance(self.source, Path):
            with open(self.source, "rb") as f:
                f.seek(start)
                return f.read(end - start)
        return self.source[start:end]


@dataclass
class Repo:
    """A model repo at one commit; `access` is public, private (needs token) or gated (needs token)."""

    repo_id: str
    files: dict[str, RepoFile]
    commit: str = field(default_factory=lambda: secrets.token_hex(20))
    access: str = "public"
    token: str | None = None


@dataclass
class Faults:
    """Switchable failures. cut_after[file] = n: the next body of that file stops after n bytes (the socket is
    closed) and later requests for it get `after_cut_status` until cleared. corrupt[file] = k: the next k
    bodies of that file have one byte flipped. status: every request answers this HTTP status."""

    cut_after: dict[str, int] = field(default_factory=dict)
    after_cut_status: int | None = 503
    down: set[str] = field(default_factory=set)
    corrupt: dict[str, int] = field(default_factory=dict)
    status: int | None = None
    slow: dict[str, float] = field(default_factory=dict)  # file -> seconds of sleep per 64 KiB sent
    # hold[file] = n: the next body of that file pauses after n bytes, sets `held`, and goes on only once
    # `release` is set; tests act while the client is known to have exactly those bytes (no clock involved).
    hold: dict[str, int] = field(default_factory=dict)
    held: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    sizes_listed: bool = True  # False: the listing has no sizes or hashes even with blobs=true (some mirrors)
    # A hostile mirror: listing[file] = {field: value} overrides that file's fields in the model listing
    # (e.g. {"blobId": "../../x"}), listing_sha overrides the commit, head[file] = {header: value} its resolve headers.
    listing: dict[str, dict] = field(default_factory=dict)
    listing_sha: str | None = None
    head: dict[str, dict] = field(default_factory=dict)
    resolve_status: dict[str, list[int]] = field(default_factory=dict)  # file -> statuses its next resolves answer
    on_cut: object = None  # called once a cut connection is closed (e.g. to move a fake clock past an expiry)


def _patch(entry: dict, fields: dict) -> dict:
    """entry with fields overridden (a field set to None is removed)."""
    return {k: v for k, v in {**entry, **fields}.items() if v is not None}


class HubServer:
    """Start with `with HubServer() as hub:`; `hub.url` is the HF_ENDPOINT to use."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.faults = Faults()
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str, str | None, bool]] = []  # method, path, Range, had auth
        self.served: dict[str, int] = {}  # file name -> body bytes sent
        self.hub = self._server(self._hub_handler)
        self.cdn = self._server(self._cdn_handler)
        self.url = f"http://127.0.0.1:{self.hub.server_address[1]}"
        self.cdn_url = f"http://127.0.0.1:{self.cdn.server_address[1]}"

    def add_repo(self, repo_id: str, files: dict[str, bytes | Path], access: str = "public",
                 token: str | None = None, lfs: set[str] | None = None) -> Repo:
        """Serve a repo; files ending in .safetensors/.bin (or named in lfs) are LFS files."""
        lfs = lfs or set()
        repo = Repo(repo_id, {n: RepoFile(n, s, n in lfs or n.endswith(LFS_SUFFIXES)) for n, s in files.items()},
                    access=access, token=token)
        self.repos[repo_id] = repo
        return repo

    def reset_stats(self) -> None:
        with self.lock:
            self.requests.clear()
            self.served.clear()

    def files_requested(self) -> set[str]:
        """Names of files whose bodies were requested (GET resolve or CDN)."""
        return {n for n, b in self.served.items()}

    # --- plumbing -------------------------------------------------------------------------------
    def _server(self, handle) -> ThreadingHTTPServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                handle(self, head=False)

            def do_HEAD(self) -> None:
                handle(self, head=True)

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        server.owner = owner
        return server

    def __enter__(self) -> HubServer:
        for srv in (self.hub, self.cdn):
            threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        for srv in (self.hub, self.cdn):
            srv.shutdown()
            srv.server_close()

    def _log(self, h: BaseHTTPRequestHandler) -> None:
        with self.lock:
            self.requests.append((h.command, h.path, h.headers.get("Range"), "authorization" in
                                  {k.lower() for k in h.headers.keys()}))

    @staticmethod
    def _reply(h, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False) -> None:
        h.send_response(status)
        for k, v in (headers or {}).items():
            if v is not None:  # a header a fault removed
                h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if not head and body:
            h.wfile.write(body)

    def _error(self, h, status: int, code: str | None = None, message: str | None = None, head=False,
               commit: str | None = None) -> None:
        headers = {"Content-Type": "application/json"}
        if code:
            headers["X-Error-Code"] = code
        if message:
            headers["X-Error-Message"] = message
        if commit:
            headers["X-Repo-Commit"] = commit
        self._reply(h, status, json.dumps({"error": message or code or str(status)}).encode(), headers, head)

    def _check_access(self, h, repo: Repo, head: bool) -> bool:
        auth = h.headers.get("Authorization", "")
        sent = auth[len("Bearer "):] if auth.startswith("Bearer ") else None
        if repo.access == "public" or (sent and sent == repo.token):
            return True
        if repo.access == "private":
            if sent:
                self._error(h, 401, None, "Invalid credentials in Authorization header", head)
            else:
                self._error(h, 401, "RepoNotFound", "Invalid username or password.", head)
        else:
            self._error(h, 403 if sent else 401, "GatedRepo",
                        f"Access to model {repo.repo_id} is restricted. You must have access to it.", head)
        return False

    # --- the hub origin ---------------------------------------------------------------------------
    def _hub_handler(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        self._log(h)
        if self.faults.status:
            return self._error(h, self.faults.status, None, "fault injected", head)
        url = urlparse(h.path)
        path = unquote(url.path)
        m = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/revision/([^/]+)|/tree/([^/]+)(/.*)?)?", path)
        if m:
            return self._api(h, m, parse_qs(url.query), head)
        m = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        if m:
            return self._resolve(h, m.group(1), m.group(2), m.group(3), head)
        self._error(h, 404, None, "not found", head)

    def _repo_rev(self, h, repo_id: str, rev: str | None, head: bool) -> Repo | None:
        repo = self.repos.get(repo_id)
        if repo is None:
            self._error(h, 404, "RepoNotFound", "Repository not found", head)
            return None
        if not self._check_access(h, repo, head):
            return None
        if rev not in (None, "main", repo.commit):
            self._error(h, 404, "RevisionNotFound", f"Invalid rev id: {rev}", head)
            return None
        return repo

    def _api(self, h, m: re.Match, query: dict, head: bool) -> None:
        repo_id, rev, tree_rev, _ = m.groups()
        repo = self._repo_rev(h, repo_id, rev or tree_rev, head)
        if repo is None:
            return
        files = sorted(repo.files.values(), key=lambda f: f.name)
        if tree_rev is not None:
            dirs = sorted({f.name.rsplit("/", 1)[0] for f in files if "/" in f.name})
            body = [{"type": "directory", "oid": git_blob_id(d.encode()), "size": 0, "path": d} for d in dirs]
            body += [{"type": "file", "oid": f.blob_id, "size": f.size, "path": f.name,
                      **({"lfs": {"oid": f.sha256, "size": f.size, "pointerSize": 134}} if f.lfs else {})}
                     for f in files]
        else:
            blobs = query.get("blobs", ["false"])[0].lower() == "true" and self.faults.sizes_listed
            siblings = [_patch({"rfilename": f.name, **({"size": f.size, "blobId": f.blob_id} if blobs else {}),
                                **({"lfs": {"size": f.size, "sha256": f.sha256, "pointerSize": 134}}
                                   if blobs and f.lfs else {})}, self.faults.listing.get(f.name, {})) for f in files]
            sha = self.faults.listing_sha or repo.commit
            body = {"_id": repo.commit[:24], "id": repo.repo_id, "modelId": repo.repo_id, "sha": sha,
                    "private": repo.access == "private", "gated": "manual" if repo.access == "gated" else False,
                    "disabled": False, "tags": [], "siblings": siblings}
        self._reply(h, 200, json.dumps(body).encode(), {"Content-Type": "application/json"}, head)

    def _resolve(self, h, repo_id: str, rev: str, name: str, head: bool) -> None:
        repo = self._repo_rev(h, repo_id, rev, head)
        if repo is None:
            return
        f = repo.files.get(name)
        if f is not None and self.faults.resolve_status.get(name):
            return self._error(h, self.faults.resolve_status[name].pop(0), None, "fault injected", head)
        if f is None:
            return self._error(h, 404, "EntryNotFound", f"{name} does not exist", head, commit=repo.commit)
        common = {"X-Repo-Commit": repo.commit, "Accept-Ranges": "bytes"}
        if f.lfs:
            return self._redirect(h, repo, f, common, head)
        self._send_file(h, f, {**common, "ETag": f'"{f.blob_id}"', **self.faults.head.get(f.name, {})}, head)

    def _redirect(self, h, repo: Repo, f: RepoFile, common: dict, head: bool) -> None:
        """An LFS file: 302 to the CDN origin."""
        common |= {"Location": f"{self.cdn_url}/cdn/{f.sha256}", "X-Linked-Etag": f'"{f.sha256}"',
                   "X-Linked-Size": str(f.size), "ETag": f'"{f.blob_id}"', **self.faults.head.get(f.name, {})}
        self._reply(h, 302, b"", common, head)

    # --- the CDN origin ---------------------------------------------------------------------------
    def _cdn_handler(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        self._log(h)
        m = re.fullmatch(r"/cdn/([0-9a-f]{64})", urlparse(h.path).path)
        found = [f for r in self.repos.values() for f in r.files.values() if m and f.sha256 == m.group(1)]
        if not found:
            return self._error(h, 404, None, "no such blob", head)
        self._send_file(h, found[0], {"ETag": f'"{found[0].sha256}"', "Accept-Ranges": "bytes"}, head)

    def _send_file(self, h, f: RepoFile, headers: dict, head: bool) -> None:
        if f.name in self.faults.down:
            return self._error(h, self.faults.after_cut_status, None, "fault injected", head)
        start, status = 0, 200
        rng = re.fullmatch(r"bytes=(\d+)-", h.headers.get("Range", "") or "")
        if rng and int(rng.group(1)) < f.size:
            start, status = int(rng.group(1)), 206
            headers = {**headers, "Content-Range": f"bytes {start}-{f.size - 1}/{f.size}"}
        length = f.size - start
        h.send_response(status)
        for k, v in headers.items():
            if v is not None:
                h.send_header(k, v)
        h.send_header("Content-Length", str(length))
        h.end_headers()
        if head:
            return
        cut = self.faults.cut_after.pop(f.name, None)
        corrupt = self.faults.corrupt.get(f.name, 0) > 0
        if corrupt:
            self.faults.corrupt[f.name] -= 1
        end = f.size if cut is None else min(f.size, start + cut)
        hold = self.faults.hold.pop(f.name, None)
        if hold is not None and start + hold < end:
            if not self._stream(h, f, start, start + hold, corrupt):
                return
            h.wfile.flush()
            self.faults.held.set()
            self.faults.release.wait(300)
            start += hold
        self._stream(h, f, start, end, corrupt)
        if cut is not None:
            if self.faults.after_cut_status:
                self.faults.down.add(f.name)
            h.close_connection = True
            h.wfile.flush()
            h.connection.shutdown(2)
            if callable(self.faults.on_cut):
                self.faults.on_cut()

    def _stream(self, h, f: RepoFile, start: int, end: int, corrupt: bool) -> bool:
        """Send bytes [start, end) of f; False when the client went away."""
        def count(n: int) -> None:
            with self.lock:
                self.served[f.name] = self.served.get(f.name, 0) + n
        try:
            pause = self.faults.slow.get(f.name)
            if isinstance(f.source, Path) and not corrupt and not pause:
                with open(f.source, "rb") as fh:
                    h.wfile.flush()
                    sent = h.connection.sendfile(fh, start, end - start)
                    count(sent)
                return True
            pos = start
            while pos < end:
                chunk = bytearray(f.read(pos, min(end, pos + (64 << 10 if pause else 1 << 20))))
                if corrupt and pos <= f.size // 2 < pos + len(chunk):
                    chunk[f.size // 2 - pos] ^= 0xFF
                h.wfile.write(chunk)
                count(len(chunk))
                pos += len(chunk)
                if pause:
                    time.sleep(pause)
        except (BrokenPipeError, ConnectionResetError):
            return False
        return True
