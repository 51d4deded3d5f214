"""A worker whose host vanishes (power off, cable pulled, network down) sends no reset: without help,
ggml-rpc's client waits in recv() for ever and the command hangs.

ggml-rpc's client sockets are plain TCP sockets of this process, opened and closed as it needs them (one per
worker while a model or context holds it, short ones for memory queries). A daemon thread finds those whose
peer is a worker (through /proc/self/fd, or /dev/fd) and turns on TCP keepalive (probes after KEEPIDLE_S
of silence) and TCP_USER_TIMEOUT (data unacknowledged for USER_TIMEOUT_S). A silent peer then makes
recv()/send() fail with ETIMEDOUT, ggml-rpc aborts, and faults.py names the worker and exits 1: at most
LOST_BOUND_S after the worker was last heard from. The kernel of a live worker answers the probes and
acknowledges data while the worker computes, so a slow worker is not taken for a lost one (it would be if it
left data unread for USER_TIMEOUT_S with its receive buffer full; ggml-rpc waits for an answer before each
large tensor, so a worker writing its --cache does not). Options the OS lacks are skipped (macOS: keepalive
only; Windows: no fd list, nothing is done).
"""

from __future__ import annotations

import os
import socket
import stat
import threading
import time

from gptoss_cli.rpc.endpoints import Endpoint

KEEPIDLE_S = 5          # silence before the first keepalive probe
KEEPINTVL_S = 2         # between probes
KEEPCNT = 3             # unanswered probes that end the connection (where TCP_USER_TIMEOUT is missing)
USER_TIMEOUT_S = 15     # Linux: unacknowledged data, or unanswered probes, for this long end the connection
SCAN_S = 1.0            # how often new sockets are looked for
# USER_TIMEOUT_S, a probe interval of slack, the 2 s reconnect probe of faults.lost_worker, the save.
LOST_BOUND_S = 20

_PEERS: set[tuple[str, int]] = set()
_LOCK = threading.Lock()
_THREAD: threading.Thread | None = None


def _options() -> list[tuple[int, int, int]]:
    """(level, option, value) to set, those this OS's socket module knows."""
    tcp = socket.IPPROTO_TCP
    wanted = [(socket.SOL_SOCKET, "SO_KEEPALIVE", 1),
              (tcp, "TCP_KEEPIDLE", KEEPIDLE_S), (tcp, "TCP_KEEPALIVE", KEEPIDLE_S),  # Linux; macOS
              (tcp, "TCP_KEEPINTVL", KEEPINTVL_S), (tcp, "TCP_KEEPCNT", KEEPCNT),
              (tcp, "TCP_USER_TIMEOUT", USER_TIMEOUT_S * 1000)]
    return [(level, getattr(socket, name), value) for level, name, value in wanted if hasattr(socket, name)]


def tune(sock: socket.socket) -> bool:
    """Turn on dead-peer detection on sock (options the OS lacks are skipped); False when it was on already."""
    if sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE):
        return False
    for level, option, value in _options():
        try:
            sock.setsockopt(level, option, value)
        except OSError:
            pass   # an option this kernel refuses: keep the others
    return True


def _fd_folder() -> str | None:
    for folder in ("/proc/self/fd", "/dev/fd"):
        if os.path.isdir(folder):
            return folder
    return None


def _socket(fd: int) -> socket.socket | None:
    """A duplicate of fd as a socket object when fd is a socket (closing it leaves fd open), else None."""
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            return None
        dup = os.dup(fd)
    except OSError:
        return None   # closed meanwhile
    try:
        return socket.socket(fileno=dup)
    except OSError:
        os.close(dup)
        return None


def _peer(sock: socket.socket) -> tuple[str, int] | None:
    """The IPv4 peer of a connected TCP socket, else None."""
    if sock.family != socket.AF_INET or sock.type != socket.SOCK_STREAM:
        return None
    try:
        return sock.getpeername()
    except OSError:
        return None   # listening, or not connected


def scan(peers: set[tuple[str, int]] | None = None) -> int:
    """Tune every TCP socket of this process connected to one of peers (default: the watched workers) that
    is not tuned yet; how many were."""
    peers = set(_PEERS) if peers is None else peers
    folder = _fd_folder()
    if not peers or folder is None:
        return 0
    tuned = 0
    for name in os.listdir(folder):
        sock = _socket(int(name)) if name.isdigit() else None
        if sock is None:
            continue
        with sock:
            if _peer(sock) in peers:
                tuned += tune(sock)
    return tuned


def addresses(endpoint: Endpoint) -> set[tuple[str, int]]:
    """The (IPv4 address, port) pairs a connection to endpoint can have as its peer (as ggml resolves it)."""
    try:
        _, _, ips = socket.gethostbyname_ex(endpoint.host)
    except OSError:
        return set()
    return {(ip, endpoint.port) for ip in ips}


def watch(endpoints: list[Endpoint]) -> None:
    """Tune the sockets ggml-rpc opens to these workers, now and every SCAN_S seconds (a daemon thread)."""
    global _THREAD
    with _LOCK:
        for endpoint in endpoints:
            _PEERS.update(addresses(endpoint))
        if _THREAD is None and _fd_folder() is not None:
            _THREAD = threading.Thread(target=_loop, daemon=True, name="rpc-keepalive")
            _THREAD.start()


def _loop() -> None:
    while True:
        try:
            scan()
        except OSError:
            pass   # a socket closed under the scan: the next one sees the rest
        time.sleep(SCAN_S)
