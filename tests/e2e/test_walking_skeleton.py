"""The whole suite as real processes (services + Envoy), reached as a user would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from headrace.router.v1 import router_pb2, router_pb2_grpc
from headrace.types.v1 import types_pb2
from tests.support.suite import RunningSuite, alive, running_suite, serving, start_suite

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[RunningSuite]:
    with running_suite(tmp_path_factory.mktemp("home"), tiny_model) as running:
        yield running


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def request(
    prompt: str = "Hello world", *, cache: bool = False, **params: object
) -> router_pb2.GenerateRequest:
    """A greedy request; the cache is bypassed unless a test is about the cache
    (Redis outlives test runs, so a cached answer would change what is measured)."""
    return router_pb2.GenerateRequest(
        prompt=prompt,
        bypass_cache=not cache,
        params=types_pb2.SamplingParams(**{"max_tokens": 16, "temperature": 0.0, **params}),
    )


def test_generate_streams_tokens_as_separate_messages_then_usage(
    suite: RunningSuite, stub: router_pb2_grpc.RouterServiceStub
) -> None:
    # 160 tokens: the tiny model decodes 16 in a few milliseconds, and deltas decoded
    # while the router is still sending travel together (coalescing), so a short
    # reply may legitimately arrive as one message on a fast, quiet machine.
    tokens = 160
    messages = list(
        stub.Generate(request(max_tokens=tokens), metadata=bearer(suite.token()), timeout=30)
    )
    texts = [m.text for m in messages if m.text]
    assert len(texts) >= 3, "tokens must arrive as they are decoded, not in one message"
    last = messages[-1]
    assert last.finish_reason == types_pb2.FINISH_REASON_LENGTH
    assert last.usage.completion_tokens == tokens
    assert last.usage.prompt_tokens > 0
    assert last.usage.total_tokens == last.usage.prompt_tokens + tokens
    assert all(m.model == "tiny" for m in messages)
    assert len({m.request_id for m in messages}) == 1 and messages[0].request_id


def test_generate_without_token_is_unauthenticated(
    stub: router_pb2_grpc.RouterServiceStub,
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Generate(request(), timeout=10))
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "Bearer" in info.value.details()


def test_generate_with_forged_token_is_unauthenticated(
    suite: RunningSuite, stub: router_pb2_grpc.RouterServiceStub
) -> None:
    header, payload, signature = suite.token().split(".")
    forged = f"{header}.{payload}.{signature[::-1]}"
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Generate(request(), metadata=bearer(forged), timeout=10))
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("req", "code"),
    [
        (router_pb2.GenerateRequest(prompt=""), grpc.StatusCode.INVALID_ARGUMENT),
        (router_pb2.GenerateRequest(prompt="x" * 40_000), grpc.StatusCode.INVALID_ARGUMENT),
        (request(temperature=5.0), grpc.StatusCode.INVALID_ARGUMENT),
        (request(max_tokens=0), grpc.StatusCode.INVALID_ARGUMENT),
        (router_pb2.GenerateRequest(prompt="hi", model="no-such-model"), grpc.StatusCode.NOT_FOUND),
    ],
    ids=["empty-prompt", "oversized-prompt", "temperature", "max-tokens", "unknown-model"],
)
def test_bad_requests_get_clear_status_codes(
    suite: RunningSuite,
    stub: router_pb2_grpc.RouterServiceStub,
    req: router_pb2.GenerateRequest,
    code: grpc.StatusCode,
) -> None:
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Generate(req, metadata=bearer(suite.token()), timeout=10))
    assert info.value.code() == code
    assert info.value.details()


@pytest.mark.parametrize(
    ("messages", "named"),
    [
        ([(types_pb2.ROLE_USER, "hi"), (types_pb2.ROLE_ASSISTANT, "hello")], "messages[1]"),
        ([(types_pb2.ROLE_USER, "hi"), (types_pb2.ROLE_SYSTEM, "late")], "messages[1]"),
        ([(types_pb2.ROLE_UNSPECIFIED, "who"), (types_pb2.ROLE_USER, "hi")], "messages[0]"),
    ],
    ids=["ends-with-assistant", "late-system", "no-role"],
)
def test_a_malformed_conversation_is_invalid_argument_naming_the_message(
    suite: RunningSuite,
    stub: router_pb2_grpc.RouterServiceStub,
    messages: list[tuple[int, str]],
    named: str,
) -> None:
    req = router_pb2.GenerateRequest(
        messages=[types_pb2.ChatMessage(role=role, content=text) for role, text in messages]
    )
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Generate(req, metadata=bearer(suite.token()), timeout=10))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert named in info.value.details(), info.value.details()


def test_request_id_flows_through_metadata_into_every_services_logs(
    suite: RunningSuite, stub: router_pb2_grpc.RouterServiceStub
) -> None:
    rid = "e2e-trace-0001"
    messages = list(
        stub.Generate(
            request("trace me"),
            metadata=(*bearer(suite.token()), ("x-request-id", rid)),
            timeout=30,
        )
    )
    assert messages[-1].request_id == rid
    time.sleep(0.3)
    services = {
        line["service"]
        for line in map(json.loads, (ln for ln in suite.log().splitlines() if ln.startswith("{")))
        if line.get("request_id") == rid
    }
    assert {"router", "inference"} <= services


def test_cancelled_stream_frees_its_slot_at_once_and_is_counted(
    suite: RunningSuite, stub: router_pb2_grpc.RouterServiceStub
) -> None:
    name = "headrace_inference_cancellations_total"
    before = suite.metric("inference-0", name, model="tiny")
    call = stub.Generate(
        request("a very long story", max_tokens=4000), metadata=bearer(suite.token()), timeout=60
    )
    assert all(next(call).text for _ in range(3))
    call.cancel()
    started = time.perf_counter()
    after = list(stub.Generate(request("next", max_tokens=2), metadata=bearer(suite.token())))
    assert after[-1].finish_reason == types_pb2.FINISH_REASON_LENGTH
    assert time.perf_counter() - started < 2.0
    deadline = time.monotonic() + 5
    while suite.metric("inference-0", name, model="tiny") < before + 1:
        assert time.monotonic() < deadline, "the cancel was not counted"
        time.sleep(0.1)


def test_a_client_deadline_ends_the_stream_and_frees_the_slot(
    suite: RunningSuite, stub: router_pb2_grpc.RouterServiceStub
) -> None:
    token = suite.token()
    with pytest.raises(grpc.RpcError) as info:
        list(
            stub.Generate(
                request("a deadline story", max_tokens=4000),
                metadata=bearer(token),
                timeout=0.3,
            )
        )
    assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    deadline = time.monotonic() + 5
    while suite.metric("inference-0", "headrace_inference_busy_slots", model="tiny") > 0:
        assert time.monotonic() < deadline, "a slot stayed busy after the deadline"
        time.sleep(0.05)
    after = list(stub.Generate(request("next", max_tokens=2), metadata=bearer(token), timeout=10))
    assert after[-1].finish_reason == types_pb2.FINISH_REASON_LENGTH


def test_reflection_lists_router_service(suite: RunningSuite) -> None:
    with grpc.insecure_channel(suite.public) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        replies = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
        )
        names = {s.name for r in replies for s in r.list_services_response.service}
    assert "headrace.router.v1.RouterService" in names
    assert "grpc.health.v1.Health" in names


def test_health_check_is_serving_on_public_port(suite: RunningSuite) -> None:
    with grpc.insecure_channel(suite.public) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=5
        )
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_envoy_stats_show_upstream_requests_on_every_cluster(
    suite: RunningSuite, stub: router_pb2_grpc.RouterServiceStub
) -> None:
    req = request(f"Stats please {uuid.uuid4().hex[:8]}", cache=True)
    list(stub.Generate(req, metadata=bearer(suite.token()), timeout=30))
    with urllib.request.urlopen(f"http://{suite.admin}/stats?filter=upstream_rq_total$") as reply:
        stats = dict(
            line.split(": ") for line in reply.read().decode().splitlines() if ": " in line
        )
    used = {
        name.split(".")[1]
        for name, value in stats.items()
        if name.startswith("cluster.") and int(value) > 0
    }
    assert {"router", "auth", "sanitizer", "cache", "inference"} <= used


def test_identical_deterministic_request_is_served_from_cache(
    suite: RunningSuite, stub: router_pb2_grpc.RouterServiceStub
) -> None:
    token = suite.token()
    req = request(f"Tell me a story {uuid.uuid4().hex[:8]}", cache=True, max_tokens=12)
    first = list(stub.Generate(req, metadata=bearer(token), timeout=30))
    second = list(stub.Generate(req, metadata=bearer(token), timeout=30))
    assert "".join(m.text for m in first) == "".join(m.text for m in second)
    assert not any(m.cached for m in first)
    assert all(m.cached for m in second)
    assert second[-1].usage == first[-1].usage


def test_buf_curl_streams_through_envoy(suite: RunningSuite) -> None:
    out = subprocess.run(
        [
            str(BIN / "buf"),
            "curl",
            "--protocol",
            "grpc",
            "--http2-prior-knowledge",
            "-H",
            f"authorization: Bearer {suite.token()}",
            "-d",
            json.dumps({"prompt": "Hello from buf", "params": {"maxTokens": 64}}),
            f"http://{suite.public}/headrace.router.v1.RouterService/Generate",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    decoder = json.JSONDecoder()
    messages, rest = [], out.stdout.strip()
    while rest:
        obj, end = decoder.raw_decode(rest)
        messages.append(obj)
        rest = rest[end:].strip()
    # Deltas produced while a reader is behind travel together (coalescing), so a fast
    # model may arrive in few messages; it still streams: text first, then the end.
    assert len(messages) >= 2 and messages[0].get("text")
    assert messages[-1]["finishReason"] == "FINISH_REASON_LENGTH"
    assert messages[-1]["usage"]["completionTokens"] == 64


def test_cli_generate_streams_to_stdout(suite: RunningSuite) -> None:
    out = subprocess.run(
        [
            str(BIN / "headrace"),
            "generate",
            "Hello CLI",
            "--max-tokens",
            "8",
            "--target",
            suite.public,
            "-v",
        ],
        env=suite.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert out.stdout.strip()
    assert "completion_tokens=8" in out.stderr


def test_cli_token_issue_prints_token_on_last_line(suite: RunningSuite) -> None:
    token = suite.token("someone")
    assert token.count(".") == 2


def test_audit_log_has_one_line_per_request_with_subject(
    suite: RunningSuite, stub: router_pb2_grpc.RouterServiceStub
) -> None:
    token = suite.token("auditor")
    list(stub.Generate(request("audit me", max_tokens=4), metadata=bearer(token), timeout=30))
    with pytest.raises(grpc.RpcError):
        list(stub.Generate(request("no token"), timeout=10))
    time.sleep(0.5)
    lines = [
        json.loads(line)
        for path in (suite.home / "audit").glob("audit-*.jsonl")
        for line in path.read_text().splitlines()
    ]
    mine = [line for line in lines if line.get("subject") == "auditor"]
    assert len(mine) == 1 and mine[0]["status"] == "OK" and mine[0]["completion_tokens"] == 4
    assert any(line["status"] == "UNAUTHENTICATED" for line in lines)


def test_secrets_in_a_prompt_never_reach_the_audit_log(
    suite: RunningSuite, stub: router_pb2_grpc.RouterServiceStub
) -> None:
    card, aws = "4111 1111 1111 1111", "AKIAIOSFODNN7EXAMPLE"
    prompt = f"My card is {card} and my key is {aws}, mail me at jo@example.com"
    messages = list(
        stub.Generate(
            request(prompt, cache=True), metadata=bearer(suite.token("secretive")), timeout=30
        )
    )
    assert messages[-1].finish_reason
    time.sleep(0.5)
    audit = "".join(p.read_text() for p in (suite.home / "audit").glob("*.jsonl"))
    assert "secretive" in audit
    for secret in (card, aws, "jo@example.com"):
        assert secret not in audit
    assert "[CARD]" in audit and "[AWS_KEY]" in audit


def test_killed_service_is_restarted_and_serves_again(
    suite: RunningSuite, stub: router_pb2_grpc.RouterServiceStub
) -> None:
    old = suite.pid("auth")
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            new = suite.pid("auth")
        except (FileNotFoundError, ValueError):
            new = old
        if new != old and serving(f"127.0.0.1:{suite.service_ports['auth']}"):
            break
        time.sleep(0.2)
    else:
        pytest.fail(f"auth was not restarted:\n{suite.log()[-3000:]}")
    assert "process_exited_restarting" in suite.log()
    # Envoy's health check brings the new process back into the auth cluster.
    deadline = time.monotonic() + 15
    while True:
        try:
            list(
                stub.Generate(request("after restart"), metadata=bearer(suite.token()), timeout=10)
            )
            break
        except grpc.RpcError as exc:
            if time.monotonic() > deadline:
                raise
            assert exc.code() == grpc.StatusCode.UNAVAILABLE
            time.sleep(0.5)


def test_sigint_stops_every_process(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Path
) -> None:
    running = start_suite(tmp_path_factory.mktemp("home-stop"), tiny_model)
    pids = running.pids()
    assert {"router", "auth", "sanitizer", "cache", "inference-0", "openai", "envoy"} <= set(pids)
    assert running.stop() == 0
    time.sleep(0.2)
    assert [name for name, pid in pids.items() if alive(pid)] == []
    assert '"suite_stopped"' in running.log()


def test_curl_streams_a_generation_through_the_rest_route(suite: RunningSuite) -> None:
    body = json.dumps({"prompt": "Hello REST", "bypassCache": True, "params": {"maxTokens": 64}})
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "-N",
            "--fail-with-body",
            "-H",
            "content-type: application/json",
            "-H",
            f"authorization: Bearer {suite.token()}",
            "-d",
            body,
            f"http://{suite.public}/headrace.router.v1.RouterService/Generate",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    messages = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    # A fast model's deltas may be coalesced into few messages while curl reads (#22):
    # one JSON object per message all the same, text first and finish and usage last.
    assert messages and messages[0].get("text"), out.stdout
    assert messages[-1]["finishReason"] == "FINISH_REASON_LENGTH"
    assert messages[-1]["usage"]["completionTokens"] == 64
    assert "".join(m.get("text", "") for m in messages)


def test_the_rest_route_maps_errors_to_http_status(suite: RunningSuite) -> None:
    out = subprocess.run(
        [
            "curl",
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "content-type: application/json",
            "-d",
            json.dumps({"prompt": "no token"}),
            f"http://{suite.public}/headrace.router.v1.RouterService/Generate",
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert out.stdout == "401"
