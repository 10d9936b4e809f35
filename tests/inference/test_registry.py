"""The model registry: LoRA variants share their base's weights, chat templates wrap
prompts, unknown models are NOT_FOUND."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from headrace.services.inference.engine import Sampling
from headrace.services.inference.registry import ModelRegistry
from headrace.services.inference.settings import InferenceSettings, LoraSpec, ModelSpec
from headrace.services.runtime.errors import NotFound
from tests.support.tiny_model import write_tiny_lora

TEMPLATE = "{{ bos_token }}<user>{{ messages[0]['content'] }}</user><assistant>"


@pytest.fixture(scope="module")
def registry(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModelRegistry]:
    lora = write_tiny_lora(tmp_path_factory.mktemp("lora") / "adapter.gguf")
    specs = [
        ModelSpec(name="base", path=tiny_model, context_size=256, aliases=["gpt-4o-mini"]),
        ModelSpec(name="base-lora", path=tiny_model, context_size=256, lora=[LoraSpec(path=lora)]),
        ModelSpec(
            name="base-lora-off",
            path=tiny_model,
            context_size=256,
            lora=[LoraSpec(path=lora, scale=0.0)],
        ),
        ModelSpec(
            name="base-chat",
            path=tiny_model,
            context_size=256,
            chat_template=TEMPLATE,
            prompt_as_user_turn=True,
        ),
    ]
    loaded = ModelRegistry.load(specs, "", tmp_path_factory.mktemp("home"), slots=1, queue_size=2)
    yield loaded
    loaded.close()


async def greedy(registry: ModelRegistry, name: str) -> str:
    engine = registry.get(name)
    sampling = Sampling(max_tokens=16, temperature=0.0)
    return "".join([d.text async for d in engine.generate("Hello world", sampling)])


async def test_a_lora_variant_shares_the_weights_and_changes_the_output(
    registry: ModelRegistry,
) -> None:
    assert registry.get("base-lora").model is registry.get("base").model
    assert await greedy(registry, "base-lora") != await greedy(registry, "base")
    assert await greedy(registry, "base-lora-off") == await greedy(registry, "base")


async def test_a_chat_template_wraps_the_prompt_as_a_user_turn(registry: ModelRegistry) -> None:
    plain, chat = registry.get("base"), registry.get("base-chat")
    assert len(chat.tokenize("Hello world")) > len(plain.tokenize("Hello world"))
    assert chat.tokenize("Hello world")[0] == plain.tokenize("Hello world")[0], "one BOS"
    assert await greedy(registry, "base-chat") != await greedy(registry, "base")


def test_an_alias_names_its_model_and_two_models_may_not_share_a_name(
    registry: ModelRegistry, tiny_model: Path
) -> None:
    assert registry.get("gpt-4o-mini") is registry.get("base")
    with pytest.raises(NotFound):
        registry.get("gpt-4")
    with pytest.raises(ValueError, match="'gpt-4o-mini' is used by both 'a' and 'b'"):
        InferenceSettings(
            models=[
                ModelSpec(name="a", path=tiny_model, aliases=["gpt-4o-mini"]),
                ModelSpec(name="b", path=tiny_model, aliases=["gpt-4o-mini"]),
            ]
        )


def test_chat_template_on_without_one_in_the_gguf_is_refused(
    tiny_model: Path, tmp_path: Path
) -> None:
    spec = ModelSpec(name="x", path=tiny_model, context_size=128, chat_template=True)
    with pytest.raises(ValueError, match=r"no tokenizer\.chat_template"):
        ModelRegistry.load([spec], "", tmp_path, slots=1, queue_size=1)


def test_unknown_model_is_not_found_and_names_the_available_ones(
    registry: ModelRegistry,
) -> None:
    with pytest.raises(NotFound, match="base-lora"):
        registry.get("nope")
    assert registry.get("").name == "base"
