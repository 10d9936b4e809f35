"""sanitizer.CheckPrompt beside auth.Authorize (the architecture's "concurrently"):
for a credential admitted recently and not refused since, the check starts with
Authorize under the tier auth gave last time; auth's verdict still comes first, and a
tier that changed is checked again."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from headrace.services.router.backends import Principal
from headrace.services.router.content import Content
from headrace.services.router.orchestrator import Ask, Orchestrator
from headrace.services.runtime.errors import InvalidArgument, ResourceExhausted
from headrace.types.v1 import types_pb2
from tests.router.fakes import ALICE, FakeAuth, Fakes, FakeSanitizer

GREEDY = types_pb2.SamplingParams(temperature=0.0)


@dataclass
class SlowAuth(FakeAuth):
    """Answers only once the sanitizer has been asked (or after `patience` s), so a
    check that waits for auth shows as a slow request."""

    sanitizer: FakeSanitizer = field(default_factory=FakeSanitizer)
    patience: float = 0.3
    waited: list[bool] = field(default_factory=list)

    async def authorize(self, credential: str, remaining: float | None, **kw: Any) -> Principal:
        asked = len(self.sanitizer.checked)
        for _ in range(int(self.patience / 0.005)):
            if len(self.sanitizer.checked) > asked:
                break
            await asyncio.sleep(0.005)
        self.waited.append(len(self.sanitizer.checked) == asked)
        return await super().authorize(credential, remaining, **kw)


def setup(tmp_path: Path, **settings: Any) -> tuple[Fakes, SlowAuth, Orchestrator]:
    fakes = Fakes()
    auth = SlowAuth(sanitizer=fakes.sanitizer)
    fakes.auth = auth
    router = fakes.orchestrator(tmp_path, tasks={"t": {}}, task_rules=[], **settings)
    return fakes, auth, router


async def ask(router: Orchestrator, credential: str = "key-a", prompt: str = "hello") -> str:
    request = Ask(Content(prompt=prompt), params=GREEDY, task="t")
    return "".join([r.text async for r in router.generate(request, credential, remaining=5.0)])


async def test_a_recent_credential_is_checked_while_auth_answers(tmp_path: Path) -> None:
    fakes, auth, router = setup(tmp_path)
    assert await ask(router) == "fresh"
    assert auth.waited == [True], "a first request is checked after auth, under its tier"
    assert await ask(router) == "fresh"
    assert auth.waited == [True, False], "the second one's check started beside Authorize"
    assert fakes.sanitizer.checked[-1][1] == ALICE.tier
    assert len(fakes.sanitizer.checked) == 2, "one check per request"
    await ask(router, credential="key-b")
    assert auth.waited[-1], "another credential has no remembered tier"


async def test_a_tier_that_changed_is_checked_again_under_the_new_one(tmp_path: Path) -> None:
    fakes, auth, router = setup(tmp_path)
    await ask(router)
    auth.principal = Principal("alice", "pro")
    await ask(router)
    assert [tier for _, tier in fakes.sanitizer.checked] == ["free", "free", "pro"]
    await ask(router)
    assert [tier for _, tier in fakes.sanitizer.checked][-1] == "pro"
    assert len(fakes.sanitizer.checked) == 4, "the new tier is remembered"


async def test_auth_refusal_comes_first_and_stops_checking_early(tmp_path: Path) -> None:
    fakes, auth, router = setup(tmp_path)
    await ask(router)
    auth.error = ResourceExhausted("token quota exceeded")
    fakes.sanitizer.error = InvalidArgument("blocked by the sanitizer")
    with pytest.raises(ResourceExhausted):
        await ask(router)  # both would refuse: auth's verdict is the one the client sees
    auth.error = fakes.sanitizer.error = None
    checks = len(fakes.sanitizer.checked)
    await ask(router)
    assert auth.waited[-1], "a refused credential buys no early check"
    assert len(fakes.sanitizer.checked) == checks + 1


async def test_a_refusal_by_the_early_check_refuses_the_request(tmp_path: Path) -> None:
    fakes, auth, router = setup(tmp_path)
    await ask(router)
    fakes.sanitizer.error = InvalidArgument("blocked by the sanitizer")
    with pytest.raises(InvalidArgument, match="blocked"):
        await ask(router)
    assert auth.waited == [True, False], "the refusal came from the check made beside auth"
    assert len(fakes.sanitizer.checked) == 2, "and no second one"


async def test_the_setting_turns_it_off(tmp_path: Path) -> None:
    _, auth, router = setup(tmp_path, check_beside_authorize=False)
    await ask(router)
    await ask(router)
    assert auth.waited == [True, True]


async def test_a_redaction_made_early_is_the_content_that_goes_on(tmp_path: Path) -> None:
    fakes, auth, router = setup(tmp_path)
    await ask(router)
    fakes.sanitizer.redact_map["mail a@b.example"] = "mail [EMAIL]"
    await ask(router, prompt="mail a@b.example")
    assert auth.waited == [True, False] and len(fakes.sanitizer.checked) == 2
    assert fakes.cache.lookups[-1].content.prompt == "mail [EMAIL]"
