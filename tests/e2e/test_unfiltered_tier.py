"""A tier whose sanitizer policy has no output rule streams as generated.

The default policy redacts output, so every response goes through the output filter
(in the router's process, under the policy the sanitizer publishes), which holds back
the last word (it might begin an e-mail address). An operator may turn output rules
off for a trusted tier; then the router streams inference's pieces straight to the
client. Neither makes a FilterStream call: that RPC stays for other callers.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from headrace.router.v1 import router_pb2, router_pb2_grpc
from headrace.types.v1 import types_pb2
from tests.support.suite import RunningSuite, running_suite

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[RunningSuite]:
    with running_suite(
        tmp_path_factory.mktemp("unfiltered-home"),
        tiny_model,
        extra_env={
            "HEADRACE_TIERS": json.dumps({"free": {}, "trusted": {}}),
            "HEADRACE_TIER_POLICIES": json.dumps({"trusted": {"redact": False}}),
        },
    ) as running:
        yield running


def filter_streams(suite: RunningSuite) -> float:
    return suite.rpcs_started("sanitizer", "headrace.sanitizer.v1.SanitizerService", "FilterStream")


def generate(
    suite: RunningSuite, stub: router_pb2_grpc.RouterServiceStub, tier: str
) -> list[router_pb2.GenerateResponse]:
    request = router_pb2.GenerateRequest(
        prompt="Hello world",
        bypass_cache=True,
        # Enough tokens that the reply outlasts a message's way through the router: the
        # tiny model decodes 12 in about a millisecond, and deltas produced while the
        # router is still writing travel together, so a short reply may be one message.
        params=types_pb2.SamplingParams(max_tokens=160, temperature=0.0),
    )
    token = suite.token(f"{tier}-user", "--tier", tier)
    return list(
        stub.Generate(request, metadata=(("authorization", f"Bearer {token}"),), timeout=30)
    )


def test_the_trusted_tier_skips_the_output_filter_and_gets_the_same_text(
    suite: RunningSuite, stub: router_pb2_grpc.RouterServiceStub
) -> None:
    filtered = generate(suite, stub, "free")
    unfiltered = generate(suite, stub, "trusted")
    assert filter_streams(suite) == 0, "the router filters in its own process"

    text = "".join(m.text for m in unfiltered)
    assert text and text == "".join(m.text for m in filtered)
    assert unfiltered[-1].finish_reason == filtered[-1].finish_reason
    assert unfiltered[-1].usage.completion_tokens == filtered[-1].usage.completion_tokens
    # Unfiltered, nothing is held back: the tokens come as they are decoded (several to
    # a message only when the client falls behind, so not necessarily one each).
    print("messages with text:", len([m for m in unfiltered if m.text]), "of", len(unfiltered))
    assert len([m for m in unfiltered if m.text]) > 1


def test_an_answer_made_for_one_tier_is_never_replayed_to_a_tier_with_other_output_rules(
    suite: RunningSuite, stub: router_pb2_grpc.RouterServiceStub
) -> None:
    # The cache is shared by default: were the output policy not part of the key, the
    # trusted tier's unfiltered text (secrets and PII included) would be replayed to
    # a default-tier client, past the filter that client's tier requires.
    # A fresh prompt: Redis outlives test runs (and reruns), so a fixed one would find
    # the previous run's entry and start out cached.
    request = router_pb2.GenerateRequest(
        prompt=f"Which tier am I on? ({uuid.uuid4().hex[:10]})",
        params=types_pb2.SamplingParams(max_tokens=12, temperature=0.0),
    )

    def ask(tier: str) -> bool:
        token = suite.token("same-subject", "--tier", tier)
        replies = list(
            stub.Generate(request, metadata=(("authorization", f"Bearer {token}"),), timeout=30)
        )
        assert replies[-1].finish_reason
        return any(m.cached for m in replies)

    assert ask("trusted") is False
    assert ask("free") is False, "the trusted tier's unfiltered answer was replayed"
    assert ask("free") is True, "the free tier's own answer is cached"
    assert ask("trusted") is True
