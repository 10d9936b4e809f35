"""Helpers for the fault tests (tests/e2e/test_faults_*.py): waiting, audit lines,
and a Redis of a test's own that it may kill, freeze and bring back."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.ports import free_port
from tests.support.suite import RunningSuite

REDIS_SERVER = shutil.which("redis-server")


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def until(condition: Callable[[], object], timeout: float, what: str) -> float:
    """Poll `condition` until it is true; the seconds it took. Fails naming `what`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - started


def envoy_stat(admin: str, name: str) -> int:
    """One counter or gauge from Envoy's admin /stats (0 when absent)."""
    with urllib.request.urlopen(f"http://{admin}/stats?filter=^{name}$", timeout=5) as reply:
        for line in reply.read().decode().splitlines():
            key, _, value = line.partition(": ")
            if key == name:
                return int(value)
    return 0


def wait_envoy_healthy(admin: str, cluster: str, hosts: int, timeout: float = 15.0) -> None:
    """Until Envoy's health checks have seen `hosts` hosts of `cluster` healthy.

    The launcher reports the suite ready once every service answers; Envoy's own
    checks (every second) may pass a moment later. Until they do, Envoy balances
    in panic mode - over every host, healthy or not - so a test of failover must
    wait for them.
    """
    until(
        lambda: envoy_stat(admin, f"cluster.{cluster}.membership_healthy") >= hosts,
        timeout,
        f"Envoy sees {hosts} healthy {cluster} hosts",
    )


def log_events(suite: RunningSuite, event: str, **fields: str) -> list[dict[str, Any]]:
    """The suite's JSON log lines of one event, with the given field values."""
    found = []
    for line in suite.log().splitlines():
        if not line.startswith("{") or f'"{event}"' not in line:
            continue
        record = json.loads(line)
        if record.get("event") == event and all(record.get(k) == v for k, v in fields.items()):
            found.append(record)
    return found


def audit_lines(home: Path) -> list[dict[str, Any]]:
    """Every audit line the router has written under <home>/audit/."""
    lines = []
    for path in sorted((home / "audit").glob("audit-*.jsonl")):
        lines += [json.loads(line) for line in path.read_text().splitlines() if line]
    return lines


def audit_of(home: Path, request_id: str, timeout: float = 5.0) -> dict[str, Any]:
    """The audit line of one request (written off the request path, so waited for)."""
    found: list[dict[str, Any]] = []

    def written() -> bool:
        found[:] = [a for a in audit_lines(home) if a.get("request_id") == request_id]
        return bool(found)

    until(written, timeout, f"audit line of {request_id}")
    return found[0]


class PrivateRedis:
    """A redis-server of a test's own on a free port: killed, frozen (SIGSTOP, the
    way a hung server looks to its clients) and started again on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        assert REDIS_SERVER is not None
        self.process = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        until(self.answers, 10, "redis-server answers PING")

    def answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.kill()
            self.process.wait()

    def freeze(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
