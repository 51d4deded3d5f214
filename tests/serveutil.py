"""A `gptoss serve` subprocess on a loopback port for the serve tests."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Served:
    """A running server: its /v1 URL, key and process."""

    url: str
    key: str | None
    proc: subprocess.Popen
    stderr: list[str]

    @property
    def root(self) -> str:
        """The URL without /v1."""
        return self.url[:-3]

    def headers(self) -> dict:
        """Authorization header for raw HTTP."""
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
                timeout: float = 60) -> tuple[int, bytes]:
        """One raw HTTP request to path under the server root; (status, body)."""
        conn = self.connect(timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return r.status, r.read()
        finally:
            conn.close()

    def connect(self, timeout: float = 60) -> http.client.HTTPConnection:
        """A new connection to the server."""
        u = urlsplit(self.url)
        return http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)

    def health(self) -> dict:
        """GET /health."""
        return json.loads(self.request("GET", "/health")[1])

    def wait_idle(self, timeout: float = 10.0) -> dict:
        """/health once no slot is busy and nothing waits (or the last answer at the timeout)."""
        end = time.monotonic() + timeout
        while True:
            h = self.health()
            if (h["slots_busy"] == 0 and h["queued"] == 0) or time.monotonic() > end:
                return h
            time.sleep(0.05)

    def rss_kib(self) -> int:
        """Resident memory of the server process."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0


def start(gguf: Path, *args: str, key: str | None = None, key_dir: Path | None = None,
          timeout: float = 240, env: dict | None = None) -> Served:
    """Start `gptoss serve GGUF --port 0 ARGS`, wait for the URL it prints."""
    # One thread: the suite runs on two xdist workers on small machines, and llama.cpp's spinning thread
    # barrier collapses (30x slower here) when its threads outnumber the free cores.
    cmd = [sys.executable, "-m", "gptoss_cli", "serve", str(gguf), "--port", "0", "--gpu-layers", "0",
           "--threads", "1", *args]
    if key is not None:
        key_file = key_dir / "key"
        key_file.write_text(key + "\n")
        cmd += ["--api-key-file", str(key_file)]
    env = {**{k: v for k, v in os.environ.items() if k != "GPTOSS_API_KEY"}, **(env or {})}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stderr: list[str] = []
    threading.Thread(target=lambda: stderr.extend(proc.stderr), daemon=True).start()
    line: list[str] = []
    reader = threading.Thread(target=lambda: line.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not line or not line[0].startswith("http"):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"gptoss serve did not start: {''.join(stderr)[-2000:]}")
    return Served(line[0].strip(), key, proc, stderr)


def stop(served: Served, sig: int | None = None) -> int:
    """Stop the server (SIGINT by default) and return its exit code."""
    import signal

    if served.proc.poll() is None:
        served.proc.send_signal(sig or signal.SIGINT)
        try:
            served.proc.wait(30)
        except subprocess.TimeoutExpired:
            served.proc.kill()
            served.proc.wait()
    return served.proc.returncode
