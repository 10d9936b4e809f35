"""The models local inference and the upstream service (hosted models) serve, model
groups and their strategies, and which models a request may be sent to."""

from __future__ import annotations

import asyncio
import time
from typing import Literal

from pydantic import BaseModel

from headrace.services.router.backends import InferenceClient, ModelInfo
from headrace.services.runtime.errors import NotFound, Unavailable
from headrace.services.runtime.logs import get_logger

log = get_logger(__name__)

Strategy = Literal["local_first", "free_first", "ordered"]


class NotListedYet(Unavailable):
    """No served model has the name, but a backend that has never listed its models
    (starting, or down) may serve it: a retry, not a wrong name. A group or a routed
    list skips such a model like an unserved one and answers with the others."""


class ModelGroup(BaseModel):
    """Models a request (or a task preset) can name as one, tried in the strategy's order
    before the first token: `local_first` local models, then hosted ones (when local
    ones are saturated or down); `free_first` hosted ones (their free allowances),
    then local ones; `ordered` exactly as listed."""

    models: list[str]
    strategy: Strategy = "local_first"

    def order(self, found: list[ModelInfo]) -> list[ModelInfo]:
        if self.strategy == "ordered":
            return found
        local = [m for m in found if not m.hosted]
        hosted = [m for m in found if m.hosted]
        return [*local, *hosted] if self.strategy == "local_first" else [*hosted, *local]


class ModelCatalog:
    """The models each backend serves, refreshed at most every `ttl` seconds. A backend
    that does not answer keeps its last list (or none), so a dead local inference does
    not hide hosted models, nor the reverse."""

    def __init__(
        self,
        inference: InferenceClient,
        ttl: float,
        upstream: InferenceClient | None = None,
        groups: dict[str, ModelGroup] | None = None,
    ) -> None:
        self._clients = [inference] if upstream is None else [inference, upstream]
        self._ttl = ttl
        self._groups = groups or {}
        self._lists: list[list[ModelInfo]] = [[] for _ in self._clients]
        self._failing: set[int] = set()
        """The backends whose last listing failed."""
        self._fetched = 0.0
        self._lock = asyncio.Lock()

    async def models(self, timeout: float | None) -> list[ModelInfo]:
        """Local models first, then hosted ones."""
        async with self._lock:
            if not any(self._lists) or time.monotonic() - self._fetched > self._ttl:
                await self._refresh(timeout)
        return [m for models in self._lists for m in models]

    async def _refresh(self, timeout: float | None) -> None:
        results = await asyncio.gather(
            *(c.list_models(timeout) for c in self._clients), return_exceptions=True
        )
        failures = []
        self._failing.clear()
        for i, result in enumerate(results):
            if isinstance(result, BaseException):
                failures.append(result)
                self._failing.add(i)
                log.warning("model_list_failed", backend=self._backend(i), error=str(result))
            else:
                self._lists[i] = result
        if len(failures) == len(results) and not any(self._lists):
            raise failures[0]
        # A backend that failed is asked again soon (within 2 s), not after the whole
        # ttl, nor on every request (a hung backend would hold each one up).
        now = time.monotonic()
        self._fetched = now - self._ttl + min(self._ttl, 2.0) if failures else now

    def _backend(self, i: int) -> str:
        return "upstream" if getattr(self._clients[i], "hosted", False) else "inference"

    def known(self, name: str) -> ModelInfo | None:
        """The model `name` names ("" the default) as last listed, without asking
        anyone; None for a group, an unknown name or before the first listing."""
        if name in self._groups:
            return None
        for models in self._lists:
            for model in models:
                if model.answers_to(name):
                    return model
        return None

    async def resolve(self, name: str, timeout: float | None) -> ModelInfo:
        """The served model a request names or aliases ("" is the default), or NotFound."""
        models = await self.models(timeout)
        for model in models:
            if model.answers_to(name):
                return model
        silent = [self._backend(i) for i in sorted(self._failing) if not self._lists[i]]
        if silent:
            # A backend that has never listed its models (starting, or down) may serve
            # this one: not a wrong name, a retry later (while `headrace up` starts,
            # hosted models may be listed before local inference has loaded its own).
            raise NotListedYet(
                f"model {name or '(the default)'!r} is not listed yet: {' and '.join(silent)} "
                "has not answered (starting, or down); retry shortly"
            )
        groups = f"; model groups: {', '.join(self._groups)}" if self._groups else ""
        raise NotFound(
            f"unknown model {name!r}; available: {', '.join(m.name for m in models)}{groups}"
        )

    async def _expand(self, name: str, timeout: float | None) -> list[ModelInfo]:
        """A model, or a group's models in its strategy's order (unserved ones skipped)."""
        group = self._groups.get(name)
        if group is None:
            return [await self.resolve(name, timeout)]
        found = []
        not_yet: NotListedYet | None = None
        for member in group.models:
            try:
                found.append(await self.resolve(member, timeout))
            except (NotFound, NotListedYet) as exc:
                not_yet = not_yet or (exc if isinstance(exc, NotListedYet) else None)
                log.warning("group_model_not_served", group=name, model=member)
        if not found and not_yet is not None:
            raise not_yet
        return group.order(found)

    async def candidates(
        self, requested: str, routed: list[str], fallbacks: list[str], timeout: float | None
    ) -> list[ModelInfo]:
        """Models to try in order: the one (or the group) the request names, else the
        routed models then the fallbacks, else the default model."""
        if requested:
            found = await self._expand(requested, timeout)
            if not found:
                raise NotFound(f"model group {requested!r} has no served model")
            return found
        found = []
        for name in dict.fromkeys([*routed, *fallbacks]):
            try:
                found.extend(await self._expand(name, timeout))
            except (NotFound, NotListedYet):
                log.warning("routed_model_not_served", model=name)
        return list(dict.fromkeys(found)) or [await self.resolve("", timeout)]
