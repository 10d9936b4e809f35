"""Channels to other services. Every internal call goes through Envoy's
internal listener, which routes by service path, balances and health-checks."""

from __future__ import annotations

import grpc

_OPTIONS = [
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.enable_retries", 0),  # Envoy owns retries
]


def internal_channel(target: str) -> grpc.aio.Channel:
    """An insecure channel to Envoy's internal listener (loopback only)."""
    return grpc.aio.insecure_channel(target, options=_OPTIONS)
