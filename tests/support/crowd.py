"""Many clients at once: the harness the OpenAI crowd tests share."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tests.support.faults import audit_lines


def concurrent_finishes(n: int, stream: Callable[[int], Iterable[Any]]) -> list[str | None]:
    """Start n OpenAI streams at the same moment (stream(i) opens the i-th) and read each
    to its end; the finish reason each ended with. The first error is raised."""
    finishes: list[str | None] = []
    errors: list[BaseException] = []
    start = threading.Barrier(n)

    def one(i: int) -> None:
        start.wait()
        try:
            finish = None
            for chunk in stream(i):
                if chunk.choices and chunk.choices[0].finish_reason:
                    finish = chunk.choices[0].finish_reason
            finishes.append(finish)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    if errors:
        raise AssertionError(f"{len(errors)} of {n} streams failed: {errors[:3]}")
    return finishes


def audit_lines_of(home: Path, subject: str, count: int, timeout: float = 10.0) -> list[dict]:
    """The subject's audit lines once there are `count` of them (written off the request
    path, so waited for)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = [line for line in audit_lines(home) if line.get("subject") == subject]
        if len(lines) >= count:
            return lines
        assert time.monotonic() < deadline, f"{len(lines)} audit lines of {count}"
        time.sleep(0.1)
