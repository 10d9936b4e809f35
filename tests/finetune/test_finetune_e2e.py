"""`headrace finetune` end to end: a made-up domain, a short LoRA training on the served
GGUF, both fidelity checks, the adapter picked up by the running suite without a
restart, and through Envoy the variant answering held-out paraphrases with the made-up
fact while the base cannot.

Needs the finetune extra (torch, transformers, peft); skipped cleanly without it.
Sized for CI on 2 busy cores: 10 facts (40 training examples), the last 4 blocks
adapted, short sequences, 40 steps.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from headrace.router.v1 import router_pb2, router_pb2_grpc
from headrace.services.router.experiments import Experiment, assign
from headrace.types.v1 import types_pb2
from tests.finetune import synthetic
from tests.support.suite import RunningSuite, running_suite

MISSING = [m for m in ("torch", "transformers", "peft") if importlib.util.find_spec(m) is None]
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(
        bool(MISSING), reason=f"needs the finetune extra ({', '.join(MISSING)} missing)"
    ),
    pytest.mark.timeout(900),
]

FACTS = 10
BASE = "gemma-3-270m"
VARIANT = f"{BASE}:quorvane"


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory, default_model: Path) -> Iterator[RunningSuite]:
    # The base is served with the same chat template the adapter is trained with, so
    # the comparison is the model, not the prompt format.
    models = [
        {
            "name": BASE,
            "path": str(default_model),
            "context_size": 512,
            "chat_template": "gemma",
        }
    ]
    with running_suite(
        tmp_path_factory.mktemp("finetune-home"),
        default_model,
        extra_env={
            "HEADRACE_MODELS": json.dumps(models),
            "HEADRACE_MODELS_DIR_POLL_SECONDS": "0.5",
            "HEADRACE_MODELS_REFRESH_SECONDS": "1",
            "HEADRACE_SLOTS": "2",
        },
    ) as suite:
        yield suite


def ask(stub: router_pb2_grpc.RouterServiceStub, token: str, model: str, question: str) -> str:
    """The question as a conversation, the format the adapter was trained on, for base
    and variant alike."""
    request = router_pb2.GenerateRequest(
        messages=[types_pb2.ChatMessage(role=types_pb2.ROLE_USER, content=question)],
        model=model,
        params=types_pb2.SamplingParams(temperature=0.0, max_tokens=12),
    )
    stream = stub.Generate(request, metadata=[("authorization", f"Bearer {token}")], timeout=60)
    return "".join(reply.text for reply in stream)


def wait_until_served(stub: router_pb2_grpc.RouterServiceStub, token: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            ask(stub, token, VARIANT, "Hello")
            return
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND or time.monotonic() > deadline:
                raise
        time.sleep(0.5)


def test_a_finetuned_adapter_is_served_and_knows_the_domain(
    suite: RunningSuite, tmp_path: Path
) -> None:
    domain = synthetic.facts(FACTS)
    data = tmp_path / "qa.jsonl"
    synthetic.write_training_data(domain, data)
    out = tmp_path / "adapter"
    started = time.monotonic()
    args = ["--data", str(data), "--model", BASE, "--name", "quorvane", "--out", str(out)]
    args += ["--experiment", "--epochs", "8", "--lr", "3e-3", "--rank", "8", "--alpha", "16"]
    args += ["--lora-layers", "4", "--max-tokens", "64", "--eval-split", "0.1"]
    proc = subprocess.run(
        [sys.executable, "-m", "headrace.cli", "finetune", *args],
        env=suite.env,
        capture_output=True,
        text=True,
        timeout=840,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((out / "report.json").read_text())
    print(
        f"finetune: {elapsed:.0f} s in all, training {report['train_seconds']} s, "
        f"{report['steps']} steps, peak RSS {report['peak_rss_mib']} MiB, held-out loss "
        f"{report['eval_loss_before']:.3f} -> {report['eval_loss_after']:.3f}"
    )
    assert report["eval_loss_after"] < report["eval_loss_before"]
    assert report["fidelity_before"]["rate"] >= 0.95
    assert report["fidelity_after"]["rate"] >= 0.95
    assert "progress" not in proc.stderr or "loss=" in proc.stderr  # the bar shows the loss
    assert "loss=" in proc.stderr

    token = suite.token("finetune-tester")
    with grpc.insecure_channel(suite.public) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        wait_until_served(stub, token, timeout=120)
        questions = synthetic.held_out_questions(domain)
        knows = {BASE: 0, VARIANT: 0}
        for model in knows:
            for question, fact in questions:
                knows[model] += fact.lead.lower() in ask(stub, token, model, question).lower()
    print(f"held-out paraphrases answered with the fact: {knows} of {len(questions)}")
    assert knows[VARIANT] >= 0.4 * len(questions)
    assert knows[BASE] <= 0.05 * len(questions)

    # --experiment: the running router splits requests that name no model between base
    # and variant, sticky per subject.
    experiment = Experiment.model_validate_json(Path(report["experiment_file"]).read_text())
    assert [arm.model for arm in experiment.arms] == [BASE, VARIANT]
    with grpc.insecure_channel(suite.public) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        for subject in ("alice", "bob", "carol", "dave"):
            arm = assign(report["experiment"], experiment.arms, subject)
            request = router_pb2.GenerateRequest(
                prompt="Hello", params=types_pb2.SamplingParams(max_tokens=2)
            )
            replies = list(
                stub.Generate(
                    request,
                    metadata=[("authorization", f"Bearer {suite.token(subject)}")],
                    timeout=60,
                )
            )
            assert {r.model for r in replies if r.model} == {arm.model}, subject
