"""A loopback hub in the style huggingface.co serves Xet-backed repos such as openai/gpt-oss-20b today.

The hub origin answers `/resolve/` for an LFS file with a 302 to a second origin, the download host (what
cas-bridge / the CDN is on the real hub), on a signed URL that expires `ttl` seconds after it was issued,
with `X-Linked-Etag` (the sha256), `X-Linked-Size`, `X-Xet-Hash`, an ETag and a `Link` to the Xet token
route. The download host checks the signature and the expiry against a fake clock that tests move (no wall
clock), honours Range, and can be told to answer the next requests for a file with given statuses.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
from urllib.parse import parse_qs, urlparse

from hubserver import HubServer, Repo, RepoFile


def xet_hash(f: RepoFile) -> str:
    """A stand-in for the file's Xet hash: 64 hex digits, never its sha256."""
    return hashlib.sha256(b"xet merkle root:" + bytes.fromhex(f.sha256)).hexdigest()


class XetHub(HubServer):
    """`with XetHub() as hub:`; `hub.clock` is the download host's time in seconds (tests add to it)."""

    def __init__(self, ttl: int = 3600) -> None:
        super().__init__()
        self.ttl, self.clock, self.key = ttl, 1_000_000.0, secrets.token_bytes(16)
        self.host_status: dict[str, list[int]] = {}  # file -> statuses the download host answers next, in order
        self.issued: dict[str, int] = {}  # file -> signed URLs handed out
        self.host_answers: list[tuple[str, int]] = []  # (file, status) for every GET on the download host
        self._host_lock = threading.Lock()

    def _sign(self, xh: str, expires: int) -> str:
        return hmac.new(self.key, f"{xh}:{expires}".encode(), hashlib.sha256).hexdigest()

    def _redirect(self, h, repo: Repo, f: RepoFile, common: dict, head: bool) -> None:
        xh, expires = xet_hash(f), int(self.clock) + self.ttl
        with self._host_lock:
            self.issued[f.name] = self.issued.get(f.name, 0) + 1
        location = f"{self.cdn_url}/xet-bridge/{xh}?Expires={expires}&Signature={self._sign(xh, expires)}"
        links = (f'<{self.url}/api/models/{repo.repo_id}/xet-read-token/{repo.commit}>; rel="xet-auth", '
                 f'<{self.cdn_url}/v1/reconstructions/{xh}>; rel="xet-reconstruction-info"')
        common |= {"Location": location, "X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(f.size),
                   "X-Xet-Hash": xh, "Link": links, "ETag": f'"{xh}"', **self.faults.head.get(f.name, {})}
        self._reply(h, 302, b"", common, head)

    def _cdn_handler(self, h, head: bool) -> None:
        self._log(h)
        url = urlparse(h.path)
        m = re.fullmatch(r"/xet-bridge/([0-9a-f]{64})", url.path)
        found = [f for r in self.repos.values() for f in r.files.values() if m and xet_hash(f) == m.group(1)]
        if not found:
            return self._error(h, 404, None, "no such file", head)
        f, query = found[0], parse_qs(url.query)
        expires = (query.get("Expires") or ["0"])[0]
        sig_ok = expires.isdigit() and hmac.compare_digest((query.get("Signature") or [""])[0],
                                                          self._sign(m.group(1), int(expires)))
        with self._host_lock:
            queued = self.host_status.get(f.name) or []
            status = queued.pop(0) if queued else None
            if status is None and not sig_ok:
                status = 403
            if status is None and self.clock > int(expires):
                status = 403  # "Request has expired", as S3 / CloudFront signed URLs answer
            self.host_answers.append((f.name, status or 200))
        if status is not None:
            body = b"<Error><Code>AccessDenied</Code><Message>Request has expired</Message></Error>"
            return self._reply(h, status, body, {"Content-Type": "application/xml"}, head)
        self._send_file(h, f, {"ETag": f'"{f.sha256}"', "Accept-Ranges": "bytes"}, head)
