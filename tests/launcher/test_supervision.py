"""Supervision details that need no suite: exit descriptions, Envoy's cluster health,
the message a failed start prints, and a child's output kept for it."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from headrace.services.launcher.supervisor import Child, describe_exit
from headrace.services.launcher.up import exit_message, unhealthy_clusters


def test_exits_are_described_by_code_or_by_signal_name() -> None:
    assert describe_exit(2) == "exit code 2"
    assert describe_exit(-11) == "killed by signal SIGSEGV (11)"
    assert describe_exit(-9) == "killed by signal SIGKILL (9)"


def _host(port: int, **health: object) -> dict:
    return {
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
        "health_status": health,
    }


def test_unhealthy_clusters_name_each_host_envoy_does_not_route_to() -> None:
    clusters = {
        "cluster_statuses": [
            {"name": "router", "host_statuses": [_host(1, eds_health_status="HEALTHY")]},
            {
                "name": "inference",
                "host_statuses": [
                    _host(2, eds_health_status="HEALTHY"),
                    _host(3, eds_health_status="HEALTHY", failed_active_health_check=True),
                ],
            },
            {"name": "cache", "host_statuses": []},
            {"name": "admin_internal", "host_statuses": [_host(4, eds_health_status="DEGRADED")]},
        ]
    }
    problems = unhealthy_clusters(clusters, {"router", "inference", "cache", "auth"})
    assert problems == [
        "inference: 127.0.0.1:3 failed_active_health_check",
        "cache: no hosts",
        "auth: not in Envoy's clusters",
    ]
    healthy = {"cluster_statuses": [clusters["cluster_statuses"][0]]}
    assert unhealthy_clusters(healthy, {"router"}) == []


async def test_a_child_keeps_its_last_output_lines_and_reports_its_exit(tmp_path: Path) -> None:
    exits: list[tuple[str, int]] = []
    script = "import sys\nfor i in range(50): print('line', i)\nsys.exit(3)"
    child = Child(
        name="demo",
        argv=[sys.executable, "-c", script],
        env={},
        pid_dir=tmp_path,
        backoff_s=30,
        on_exit=lambda c, code: exits.append((c.name, code)),
    )
    child.start()
    for _ in range(200):
        if exits:
            break
        await asyncio.sleep(0.05)
    await child.stop(5)
    assert exits == [("demo", 3)]
    assert child.tail[-1] == "line 49"
    assert len(child.tail) == 20
    message = exit_message(child, 3)
    assert "'demo'" in message and "exit code 3" in message
    assert "  | line 49" in message and "headrace doctor" in message
