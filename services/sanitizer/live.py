"""The sanitizer's policies while it runs: reloaded when its configuration files
change, and published, versioned, to whoever watches the output policy
(WatchOutputPolicy: the routers, which filter output in their own process).

No gRPC here: a published policy set carries its protobuf form (the shared
output-filter library's wire format) so every watcher is sent the same bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from headrace.sanitizer.v1 import sanitizer_pb2
from headrace.services.runtime.logs import get_logger
from headrace.services.runtime.output_filter.wire import policy_set_to_proto, version_of
from headrace.services.sanitizer.policy import TierPolicies

log = get_logger(__name__)


@dataclass(frozen=True)
class Published:
    """One version of the policies, as every caller sees it until the next."""

    policies: TierPolicies
    version: str
    output: sanitizer_pb2.OutputPolicySet
    replaced: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when a newer version takes this one's place."""


def publish(policies: TierPolicies) -> Published:
    """The policies with their output rules as data and the version of those."""
    output = policy_set_to_proto(
        policies.default.output_rules,
        {name: policy.output_rules for name, policy in policies.tiers.items()},
    )
    return Published(policies, version_of(output), output)


Signature = tuple[tuple[str, int, int] | None, ...]


def _signature(paths: Iterable[Path]) -> Signature:
    """What identifies the files' content cheaply: size and modification time."""
    out: list[tuple[str, int, int] | None] = []
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            out.append(None)
        else:
            out.append((str(path), st.st_mtime_ns, st.st_size))
    return tuple(out)


class LivePolicies:
    """The current policies; `reload` replaces them when the configuration changed.

    load: builds the policies from the configuration as it is now (raises on a
    bad rule: the running policies then stay); sources: the files that
    configuration reads (headrace.toml, terms files), polled by `follow`.
    """

    def __init__(
        self,
        policies: TierPolicies,
        load: Callable[[], TierPolicies] | None = None,
        sources: Callable[[], Iterable[Path]] = tuple,
    ) -> None:
        self.current = publish(policies)
        self._load = load
        self._sources = sources
        self._signature = _signature(sources())
        self.closed = asyncio.Event()
        """Set when the service stops: watchers end their streams."""

    @property
    def policies(self) -> TierPolicies:
        return self.current.policies

    def replace(self, policies: TierPolicies) -> bool:
        """Publish new policies; whether their output policy version changed."""
        old, new = self.current, publish(policies)
        self.current = new
        old.replaced.set()
        return new.version != old.version

    def reload(self) -> bool:
        """Load the configuration again; a configuration that does not load keeps the
        running policies (logged). Whether anything was replaced."""
        if self._load is None:
            return False
        try:
            policies = self._load()
        except (ValueError, ValidationError, OSError) as exc:
            log.error("policy_reload_failed", error=str(exc).splitlines()[0][:300])
            return False
        previous = self.current.version
        self.replace(policies)
        log.info("policy_reloaded", output_version=self.current.version, previous=previous)
        return True

    def changed_on_disk(self) -> bool:
        """Whether a source file changed since the last look."""
        signature = _signature(self._sources())
        changed, self._signature = signature != self._signature, signature
        return changed

    async def follow(self, interval: float) -> None:
        """Reload whenever a source file changes, looking every `interval` seconds."""
        while not self.closed.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.closed.wait(), interval)
            if not self.closed.is_set() and self.changed_on_disk():
                self.reload()

    def close(self) -> None:
        self.closed.set()
