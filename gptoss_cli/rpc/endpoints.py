"""Worker addresses: `HOST:PORT[,HOST:PORT...]` parsing, the loopback rule, and a reachability probe."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from converters.errors import BadInputError

MAX_SERVERS = 16            # GGML_RPC_MAX_SERVERS (ggml-rpc.h)


@dataclass(frozen=True)
class Endpoint:
    """One worker's address as ggml-rpc takes it: `host:port` (ggml splits at the first colon: no IPv6)."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def parse_endpoint(text: str, default_port: int | None = None) -> Endpoint:
    """`HOST:PORT` (or `HOST` when default_port is given) -> Endpoint; BadInputError when malformed."""
    s = text.strip()
    host, sep, port = s.partition(":")
    if not sep and default_port is not None:
        port = str(default_port)
    if not host or ":" in port or not port.isdigit() or not 0 < int(port) < 65536:
        raise BadInputError(text, "not a worker address", "Write it as HOST:PORT, e.g. 10.0.0.2:50052 "
                                                           "(IPv6 addresses are not supported by llama.cpp's RPC)")
    return Endpoint(host, int(port))


def parse_endpoints(text: str) -> list[Endpoint]:
    """`--rpc HOST:PORT[,HOST:PORT...]` -> endpoints, in order, each once."""
    endpoints = [parse_endpoint(part) for part in text.split(",") if part.strip()]
    if not endpoints:
        raise BadInputError(text, "no worker address", "Pass --rpc HOST:PORT[,HOST:PORT...]")
    if len(set(endpoints)) != len(endpoints):
        raise BadInputError(text, "a worker is listed twice", "List each HOST:PORT once")
    if len(endpoints) > MAX_SERVERS:
        raise BadInputError(text, f"{len(endpoints)} workers, llama.cpp takes at most {MAX_SERVERS}",
                            "Pass fewer workers")
    return endpoints


def is_loopback(host: str) -> bool:
    """Whether listening on host (a `--host` of serve or worker) keeps the port on this machine: an IP
    literal in 127.0.0.0/8 or ::1, or a name every address of which is one (`localhost`). For binding only:
    never for a Host header a client sent, whose name an attacker's DNS may point at 127.0.0.1."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def probe(endpoint: Endpoint, timeout: float = 3.0) -> str | None:
    """None when something accepts TCP connections at endpoint, else why not (refused, timed out, ...)."""
    try:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout):
            return None
    except socket.gaierror as exc:
        return f"cannot resolve {endpoint.host} ({exc.strerror})"
    except TimeoutError:
        return f"no answer within {timeout:g} s"
    except OSError as exc:
        return (exc.strerror or str(exc)).lower()
