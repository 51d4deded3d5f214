"""A worker whose host vanishes mid-reply (power off, cable pulled: no reset ever arrives) must not hang the
client: `gptoss chat --rpc` exits 1 within seconds with one line naming the worker.

The vanishing host is a network namespace this test makes, joined to this one by a veth pair on a private
/30 (10.213.X.0/30, only the two addresses of that pair are used); its link is taken down under a running
reply, the worker process left alive. Needs root (CAP_NET_ADMIN) and iproute2; skips without them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_rpc import needs_rpc

from gptoss_cli.rpc.keepalive import LOST_BOUND_S

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow
IP = shutil.which("ip") or "/usr/sbin/ip"
PORT = 50052          # the namespace is private: llama.cpp's default port is free there
EXIT_BOUND_S = 2 * LOST_BOUND_S   # link down -> exit 1 as the README states it, with slack for a busy machine


def _ip(*args: str, ns: str | None = None) -> None:
    prefix = [IP, "netns", "exec", ns] if ns else []
    subprocess.run(prefix + [IP, *args], check=True, capture_output=True, text=True, timeout=30)


class VanishingHost:
    """A network namespace behind a veth pair: a second machine on a private link that can vanish."""

    def __init__(self) -> None:
        pid = os.getpid()
        self.ns, self.here, self.there = f"gptoss-vanish-{pid}", f"gv{pid}h", f"gv{pid}w"
        used = subprocess.run([IP, "-4", "-o", "addr"], capture_output=True, text=True).stdout
        x = next(x for x in (16 + (pid + i) % 200 for i in range(200)) if f"10.213.{x}." not in used)
        self.local, self.addr = f"10.213.{x}.1", f"10.213.{x}.2"
        self.made = False

    def create(self) -> None:
        _ip("netns", "add", self.ns)
        self.made = True
        _ip("link", "add", self.here, "type", "veth", "peer", "name", self.there)
        _ip("link", "set", self.there, "netns", self.ns)
        _ip("addr", "add", f"{self.local}/30", "dev", self.here)
        _ip("link", "set", self.here, "up")
        _ip("addr", "add", f"{self.addr}/30", "dev", self.there, ns=self.ns)
        _ip("link", "set", self.there, "up", ns=self.ns)

    def vanish(self) -> None:
        """Its network card goes dark: no FIN, no reset, nothing answers any more."""
        _ip("link", "set", self.there, "down", ns=self.ns)

    def close(self) -> None:
        for args in (["link", "del", self.here], ["netns", "del", self.ns]):
            subprocess.run([IP, *args], capture_output=True, timeout=30)


@pytest.fixture
def host():
    if os.geteuid() != 0:
        pytest.skip("making a network namespace needs root")
    if not os.path.exists(IP):
        pytest.skip("iproute2's `ip` is not installed")
    h = VanishingHost()
    try:
        h.create()
    except subprocess.CalledProcessError as exc:
        h.close()
        pytest.skip(f"cannot make a network namespace here ({(exc.stderr or '').strip()})")
    yield h
    h.close()


def _start_worker(h: VanishingHost, log: Path) -> subprocess.Popen:
    proc = subprocess.Popen([IP, "netns", "exec", h.ns, sys.executable, "-m", "gptoss_cli", "worker", "--host",
                             h.addr, "--allow-remote", "--port", str(PORT), "--threads", "1"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log.open("w"))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            socket.create_connection((h.addr, PORT), timeout=1).close()
            return proc
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"the worker never listened: {log.read_text()}")


class Streamed:
    """Reads a pipe in a thread; wait_for(n) returns once n bytes came (or the pipe closed)."""

    def __init__(self, pipe) -> None:
        self.data = bytearray()
        self._cond = threading.Condition()
        self._closed = False
        threading.Thread(target=self._read, args=(pipe,), daemon=True).start()

    def _read(self, pipe) -> None:
        while chunk := os.read(pipe.fileno(), 4096):
            with self._cond:
                self.data += chunk
                self._cond.notify_all()
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def wait_for(self, n: int, timeout: float) -> int:
        with self._cond:
            self._cond.wait_for(lambda: len(self.data) >= n or self._closed, timeout)
            return len(self.data)

    def text(self) -> str:
        self.wait_for(1 << 40, 5)
        return self.data.decode("utf-8", "replace")


def test_keepalive_is_set_on_worker_connections_only():
    """What turns a vanished host's silence into an error: keepalive and a user timeout on the connections
    to workers, none on any other socket, each set once."""
    from gptoss_cli.rpc import keepalive

    servers = [socket.create_server(("127.0.0.1", 0)) for _ in range(2)]
    worker, other = (socket.create_connection(s.getsockname()) for s in servers)
    try:
        assert keepalive.scan({servers[0].getsockname()}) == 1
        assert keepalive.scan({servers[0].getsockname()}) == 0
        assert worker.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert other.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
        if sys.platform == "linux":
            tcp = socket.IPPROTO_TCP
            assert worker.getsockopt(tcp, socket.TCP_KEEPIDLE) == keepalive.KEEPIDLE_S
            assert worker.getsockopt(tcp, socket.TCP_KEEPINTVL) == keepalive.KEEPINTVL_S
            assert worker.getsockopt(tcp, socket.TCP_USER_TIMEOUT) == keepalive.USER_TIMEOUT_S * 1000
    finally:
        for s in (worker, other, *servers):
            s.close()


@needs_rpc
def test_worker_host_vanishes_mid_reply(tiny_gguf, host, tmp_path):
    worker = _start_worker(host, tmp_path / "worker.log")
    endpoint = f"{host.addr}:{PORT}"
    chat = None
    try:
        # A 16k context and as many tokens: the reply cannot end before the link goes down, once it streams.
        chat = subprocess.Popen([sys.executable, "-m", "gptoss_cli", "chat", str(tiny_gguf), "-p",
                                 "Tell me a very long story.", "--ctx-size", "16384", "--max-tokens", "16000",
                                 "--seed", "3", "--threads", "1", "--rpc", endpoint],
                                cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = Streamed(chat.stdout), Streamed(chat.stderr)
        assert out.wait_for(200, timeout=180) >= 200 and chat.poll() is None, err.text()   # the reply streams
        host.vanish()
        t0 = time.monotonic()
        try:
            code = chat.wait(timeout=EXIT_BOUND_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {EXIT_BOUND_S} s after the worker's host vanished: {err.text()}")
        elapsed = time.monotonic() - t0
        print(f"link down -> exit {code} in {elapsed:.1f} s")
    finally:
        for proc in (chat, worker):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)
    stderr = err.text()
    assert code == 1, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    assert errors[0].startswith(f"error: worker lost ({endpoint}): it stopped answering"), stderr
    assert "Traceback" not in stderr and "GGML_ASSERT" not in stderr
