"""Prometheus metrics every service exports, and the /metrics endpoint.

RPC metrics follow the grpc-ecosystem (go-grpc-prometheus) names so existing
dashboards and alerts apply: grpc_server_handled_total, grpc_server_handling_seconds,
plus an in-flight gauge.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RPC_STARTED = Counter(
    "grpc_server_started_total",
    "RPCs started on the server.",
    ["grpc_service", "grpc_method", "grpc_type"],
)
RPC_HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, by status code.",
    ["grpc_service", "grpc_method", "grpc_type", "grpc_code"],
)
RPC_LATENCY = Histogram(
    "grpc_server_handling_seconds",
    "Time from the start of an RPC to its end (whole stream for streaming RPCs).",
    ["grpc_service", "grpc_method", "grpc_type"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
RPC_IN_FLIGHT = Gauge(
    "grpc_server_in_flight",
    "RPCs being served right now.",
    ["grpc_service", "grpc_method", "grpc_type"],
)


def start_metrics_server(host: str, port: int) -> None:
    """Serve /metrics over HTTP on a daemon thread (never on the event loop)."""
    start_http_server(port, addr=host)
