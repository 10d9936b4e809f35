"""Free loopback ports for tests that start real servers."""

from __future__ import annotations

import random
import socket
from pathlib import Path


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ephemeral_low(default: int = 32768) -> int:
    """The first port the kernel hands to outgoing connections (Linux: 32768)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return default


def free_port_block(size: int, low: int = 20000, high: int | None = None) -> int:
    """The first port of `size` consecutive free ports, below the ephemeral range.

    A port in the ephemeral range may be free when checked and taken a moment later by
    an outgoing connection (a Redis client's, another test's) before the service binds
    it: blocks drawn up to 45000 once kept a suite here from starting ("Address already
    in use"). Where the ephemeral range starts too low to leave room, the old range is
    used.
    """
    high = high or 45000
    if ephemeral_low() - size > low:
        high = min(high, ephemeral_low())
    for _ in range(500):
        base = random.randrange(low, high - size)
        if all(port_free(base + i) for i in range(size)):
            return base
    raise RuntimeError(f"no block of {size} free ports found")
