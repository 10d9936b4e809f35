"""`headrace upstreams` (allowances used and left, from Redis) and `headrace doctor` on
hosted models: keys shown as present or absent, never their value."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import redis.asyncio as redis

from headrace.services.upstream.allowance import Allowances, RedisAllowanceStore
from headrace.services.upstream.settings import Allowance
from tests.support.ports import free_port_block

HEADRACE = str(Path(sys.executable).parent / "headrace")
KEY = "sk-cli-0a1b2c3d4e5f60718293a4b5c6d7e8f9"
REDIS_URL = "redis://127.0.0.1:6379/9"


def run(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base, metrics = free_port_block(12), free_port_block(8)
    full_env = {
        **os.environ,
        "HEADRACE_HOME": str(home),
        "HEADRACE_CONFIG": str(home / "no-such-headrace.toml"),
        "HEADRACE_PUBLIC_PORT": str(base),
        "HEADRACE_INTERNAL_PORT": str(base + 1),
        "HEADRACE_ADMIN_PORT": str(base + 2),
        "HEADRACE_SERVICE_PORT_BASE": str(base + 3),
        "HEADRACE_METRICS_PORT_BASE": str(metrics),
        "HEADRACE_REDIS_URL": REDIS_URL,
        **env,
    }
    return subprocess.run(
        [HEADRACE, *args], env=full_env, capture_output=True, text=True, timeout=120
    )


def hosted(prefix: str) -> dict[str, str]:
    models = [
        {
            "name": "groq-llama",
            "base_url": "https://api.groq.com/openai/v1",
            "api_key_env": "CLI_TEST_KEY",
            "allowance": {"requests_per_day": 100, "tokens_per_month": 50000},
        },
        {"name": "no-key", "base_url": "https://example.invalid/v1", "api_key_env": "CLI_NO_KEY"},
    ]
    return {
        "HEADRACE_HOSTED_MODELS": json.dumps(models),
        "HEADRACE_ALLOWANCE_PREFIX": prefix,
        "CLI_TEST_KEY": KEY,
    }


async def spend(prefix: str, requests: int, tokens: int) -> None:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5)
    try:
        await client.ping()
    except (redis.RedisError, OSError):
        pytest.skip("no Redis on 127.0.0.1:6379")
    allowances = Allowances(
        RedisAllowanceStore(client),
        {"groq-llama": Allowance(requests_per_day=100, tokens_per_month=50000)},
        prefix,
    )
    for _ in range(requests):
        reservation = await allowances.reserve("groq-llama", 500)
        await allowances.settle(reservation, tokens, reached=True)
    await allowances.cool_down("groq-llama", 30)
    await client.aclose()


async def clean(prefix: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    async for key in client.scan_iter(f"{prefix}*"):
        await client.delete(key)
    await client.aclose()


def test_upstreams_prints_allowances_used_and_left_from_redis(tmp_path: Path) -> None:
    prefix = f"headrace:test:{uuid.uuid4().hex[:8]}"
    asyncio.run(spend(prefix, 3, 120))
    try:
        result = run(tmp_path, "upstreams", **hosted(prefix))
    finally:
        asyncio.run(clean(prefix))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "groq-llama (api.groq.com, key present, UTC, cooling down" in out
    day = next(line for line in out.splitlines() if "requests_per_day" in line).split()
    month = next(line for line in out.splitlines() if "tokens_per_month" in line).split()
    assert day[1:4] == ["3", "100", "97"]
    assert month[1:4] == ["360", "50000", "49640"]
    assert "no-key (example.invalid, key absent" in out and "unlimited" in out
    assert KEY not in out and KEY not in result.stderr


def test_doctor_shows_keys_as_present_or_absent_only(tmp_path: Path) -> None:
    result = run(tmp_path, "doctor", "--no-decode", **hosted("headrace:test:doctor"))
    lines = [line for line in result.stdout.splitlines() if "hosted model" in line]
    assert any(
        line.startswith("OK") and "groq-llama" in line and "key present" in line for line in lines
    )
    assert any(
        line.startswith("WARN") and "no-key" in line and "key absent" in line for line in lines
    )
    assert any("no tier or subject has opted in" in line for line in lines)
    assert KEY not in result.stdout and KEY not in result.stderr
