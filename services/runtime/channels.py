"""Channels to other services. Every internal call goes through Envoy's
internal listener, which routes by service path, balances and health-checks."""

from __future__ import annotations

import grpc

from headrace.services.runtime.tls import CertPaths, channel_credentials

_OPTIONS = [
    ("grpc.max_receive_message_length", 16 * 1024 * 1024),
    ("grpc.max_send_message_length", 16 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.enable_retries", 0),  # Envoy owns retries
]


def internal_channel(target: str, tls: CertPaths | None = None) -> grpc.aio.Channel:
    """A channel to Envoy's internal listener: plaintext on loopback, or mTLS with the
    suite's internal certificate when `tls` is given (HEADRACE_TLS)."""
    if tls is None:
        return grpc.aio.insecure_channel(target, options=_OPTIONS)
    return grpc.aio.secure_channel(target, channel_credentials(tls), options=_OPTIONS)
