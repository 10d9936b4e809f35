"""/v1/chat/completions through Envoy with the real OpenAI SDKs (Python, and Node where
it is installed): streamed and whole chats, JSON Schema output, concurrency and audit.

These need the router to pass `messages` and `response_format` on to inference, and
inference to render a conversation with the model's chat template (issue 17): the tiny
model is given a Gemma-style template in its registry entry.
"""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import openai
import pytest

from tests.support.crowd import audit_lines_of, concurrent_finishes
from tests.support.suite import NODE_CLIENT, RunningSuite, run_node, running_suite

pytestmark = pytest.mark.e2e

TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<start_of_turn>"
    "{{ 'model' if m['role'] == 'assistant' else 'user' }}\n{{ m['content'] }}<end_of_turn>\n"
    "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)
TEMPLATE_MARKERS = ("<start_of_turn>", "<end_of_turn>", "<bos>", "<s>", "</s>")
SCHEMA = {
    "type": "object",
    "properties": {
        "ok": {"type": "boolean"},
        "stars": {"type": "integer", "minimum": 1, "maximum": 5},
        "confidence": {"type": "number", "minimum": 0, "exclusiveMaximum": 1},
    },
    "required": ["ok", "stars", "confidence"],
    "additionalProperties": False,
}


@pytest.fixture(scope="module")
def suite(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[RunningSuite]:
    models = [
        {"name": "tiny", "path": str(tiny_model), "context_size": 4096, "chat_template": TEMPLATE}
    ]
    with running_suite(
        tmp_path_factory.mktemp("openai-chat-home"),
        tiny_model,
        extra_env={"HEADRACE_MODELS": json.dumps(models), "HEADRACE_QUEUE_SIZE": "64"},
    ) as running:
        yield running


@pytest.fixture(scope="module")
def sdk(suite: RunningSuite) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=suite.openai_url, api_key=suite.token("chatter"), max_retries=0, timeout=60
    )


def conversation(last: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hello there"},
        {"role": "assistant", "content": "Hi"},
        {"role": "user", "content": last},
    ]


def test_a_streamed_chat_sends_chunks_then_finish_then_usage_without_template_tokens(
    sdk: openai.OpenAI,
) -> None:
    stream = sdk.chat.completions.create(
        model="tiny",
        messages=conversation("Tell me a story"),
        # Long enough to stream: tokens decoded while a hop is behind travel together.
        max_tokens=160,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    texts = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(texts) >= 2
    text = "".join(texts)
    assert text.strip() and not any(marker in text for marker in TEMPLATE_MARKERS)
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [
        c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason
    ]
    assert finishes == ["length"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 160
    # The template's turns count as prompt tokens: far more than the last turn alone.
    assert chunks[-1].usage.prompt_tokens > 12


def test_a_whole_chat_and_the_developer_role(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(
        model="tiny",
        messages=[
            {"role": "developer", "content": "Answer briefly."},
            {"role": "user", "content": [{"type": "text", "text": "Say something"}]},
        ],
        max_completion_tokens=6,
        n=1,
        presence_penalty=0,
        frequency_penalty=0,
    )
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content.strip()
    assert completion.usage.completion_tokens == 6


def test_n_2_is_refused_naming_n(sdk: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        sdk.chat.completions.create(
            model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=2, n=2
        )
    assert info.value.body["param"] == "n"


def test_a_json_schema_response_validates(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(
        model="tiny",
        messages=[{"role": "user", "content": "Is water wet? Answer in JSON."}],
        max_tokens=128,
        temperature=0,
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": SCHEMA, "strict": True},
        },
    )
    assert completion.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(completion.choices[0].message.content), SCHEMA)


def test_20_concurrent_streamed_chats_all_complete_with_20_audit_lines(
    suite: RunningSuite,
) -> None:
    subject = f"chat-crowd-{uuid.uuid4().hex[:8]}"
    crowd = openai.OpenAI(
        base_url=suite.openai_url, api_key=suite.token(subject), max_retries=0, timeout=120
    )
    finishes = concurrent_finishes(
        20,
        lambda i: crowd.chat.completions.create(
            model="tiny", messages=conversation(f"Story {i}"), max_tokens=12, stream=True
        ),
    )
    assert finishes == ["length"] * 20
    assert len(audit_lines_of(suite.home, subject, 20)) == 20


@pytest.mark.skipif(
    shutil.which("node") is None or not (NODE_CLIENT / "node_modules" / "openai").is_dir(),
    reason="needs node and `make node` (npm ci in clients/node)",
)
def test_the_node_openai_package_streams_a_chat(suite: RunningSuite) -> None:
    env = {
        "HEADRACE_URL": suite.openai_url,
        "HEADRACE_TOKEN": suite.token("node-openai"),
        "MAX_TOKENS": "9",
    }
    result = run_node("openai-example.js", "Hello from Node", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip()
    assert "finish=length completion_tokens=9" in result.stderr
