"""`python -m headrace.services.runtime.probe`: a health check a container runtime can run.

Compose (and anything else without Kubernetes' built-in gRPC probes) needs a command
that exits 0 when a process is healthy:

    python -m headrace.services.runtime.probe grpc 127.0.0.1:50051      # grpc.health.v1 SERVING
    python -m headrace.services.runtime.probe http http://127.0.0.1:9901/ready   # HTTP 200

It prints the reason and exits 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import urllib.request


def grpc_serving(target: str, service: str = "", timeout: float = 2.0) -> str:
    """ "" when `target` reports SERVING for `service`, else what it reported."""
    # Imported here: an http probe (run every few seconds) need not load gRPC.
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError as exc:
            return f"{target}: {exc.code().name}: {exc.details()}"  # type: ignore[attr-defined]
    if reply.status != health_pb2.HealthCheckResponse.SERVING:
        return f"{target}: {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}"
    return ""


def http_ok(url: str, timeout: float = 2.0) -> str:
    """ "" when `url` answers 200, else why not."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as reply:
            return "" if reply.status == 200 else f"{url}: HTTP {reply.status}"
    except OSError as exc:
        return f"{url}: {exc}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m headrace.services.runtime.probe")
    parser.add_argument("kind", choices=["grpc", "http"])
    parser.add_argument("target", help="HOST:PORT for grpc, a URL for http")
    parser.add_argument("--service", default="", help="grpc: the service name to check")
    parser.add_argument("--timeout", type=float, default=2.0)
    args = parser.parse_args(argv)
    if args.kind == "grpc":
        problem = grpc_serving(args.target, args.service, args.timeout)
    else:
        problem = http_ok(args.target, args.timeout)
    if problem:
        print(f"unhealthy: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
