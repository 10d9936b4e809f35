"""Launcher settings (`HEADRACE_*`, `[launcher]` in headrace.toml)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from headrace.services.runtime.settings import HeadraceSettings


class LauncherSettings(HeadraceSettings):
    """Ports and supervision knobs. Every service port is `service_port_base + offset`."""

    section: ClassVar[str] = "launcher"

    host: str = "127.0.0.1"
    public_port: int = 8080
    internal_port: int = 8081
    admin_port: int = 9901
    service_port_base: int = 50051
    """router +0, auth +1, sanitizer +2, cache +3, inference replicas +4, +5, …, then the
    openai (HTTP) service after the last replica (+5 with one replica), then the upstream
    service (hosted models, +6 with one replica)."""
    metrics_port_base: int = 9460
    """/metrics ports, with the same offsets as the service ports."""
    launcher_metrics_port: int = 0
    """The launcher's own /metrics (process restarts); 0 means the port after the last
    service's metrics port (metrics_port_base + number of processes)."""
    inference_replicas: int = Field(default=1, ge=1, le=16)
    ready_timeout_seconds: float = 300.0
    """How long `up` waits for every service to report SERVING."""
    restart_backoff_seconds: float = 0.5
    restart_backoff_max_seconds: float = 30.0
    stop_timeout_seconds: float = 15.0
    """After SIGTERM, a process gets this long before SIGKILL."""
    envoy_concurrency: int = Field(default=1, ge=1)
    envoy_log_level: str = "warning"
    envoy_stream_window_bytes: int = Field(default=1048576, ge=65535, le=2**31 - 1)
    """HTTP/2 stream window Envoy grants and asks for (the RFC minimum is 65535)."""
    envoy_buffer_limit_bytes: int = Field(default=1048576, ge=1024)
    """Envoy's buffer per connection (per stream on HTTP/2). With the window, what a
    client that stops reading can make Envoy hold, per stream, before backpressure
    reaches the router and then inference."""
    stop_with_parent: bool = False
    """Stop (as on SIGTERM) when the parent process dies; `make up` sets it, so a
    SIGTERM sent to make stops the suite too."""
