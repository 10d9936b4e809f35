"""The audit log: one JSON object per line, per request, in a file per day
under <home>/audit/. Writing never blocks a request: lines go through a
bounded queue to a writer task; a line that cannot be queued or written is
counted in a metric and logged, never silently lost.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path
from typing import Any

from prometheus_client import Counter

from headrace.services.runtime.logs import get_logger

log = get_logger(__name__)

AUDIT_WRITTEN = Counter("headrace_audit_lines_written_total", "Audit lines written.")
AUDIT_DROPPED = Counter(
    "headrace_audit_lines_dropped_total",
    "Audit lines lost because the queue was full or the write failed.",
    ["reason"],
)


class AuditLog:
    """A bounded, asynchronous JSON-lines writer: a file per UTC day named
    `<prefix>-YYYY-MM-DD.jsonl`, files older than `retention_days` removed."""

    def __init__(
        self, directory: Path, queue_size: int, prefix: str = "audit", retention_days: int = 30
    ) -> None:
        self.directory = directory
        self.prefix = prefix
        self.retention_days = retention_days
        self._queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(queue_size)
        self._task: asyncio.Task[None] | None = None
        self._pruned_on = ""

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._task = asyncio.create_task(self._run(), name=f"{self.prefix}-writer")

    def prune(self, today: dt.date | None = None) -> list[Path]:
        """Delete files older than the retention period; the deleted paths."""
        today = today or dt.datetime.now(dt.UTC).date()
        cutoff = today - dt.timedelta(days=self.retention_days)
        removed = []
        for path in self.directory.glob(f"{self.prefix}-*.jsonl"):
            try:
                day = dt.date.fromisoformat(path.stem[len(self.prefix) + 1 :])
            except ValueError:
                continue
            if day < cutoff:
                path.unlink(missing_ok=True)
                removed.append(path)
        return removed

    def record(self, line: dict[str, Any]) -> None:
        """Queue one line; never waits."""
        try:
            self._queue.put_nowait(line)
        except asyncio.QueueFull:
            AUDIT_DROPPED.labels("queue_full").inc()
            log.error("audit_line_dropped", reason="queue_full", request=line.get("request_id"))

    async def close(self) -> None:
        """Write what is queued, then stop."""
        if self._task is None:
            return
        await self._queue.put(None)
        await self._task

    def _path(self, when: dt.datetime) -> Path:
        return self.directory / f"{self.prefix}-{when:%Y-%m-%d}.jsonl"

    def _write(self, lines: list[dict[str, Any]]) -> None:
        today = f"{dt.datetime.now(dt.UTC):%Y-%m-%d}"
        if today != self._pruned_on:  # once a day, in the writer's thread
            self._pruned_on = today
            for path in self.prune():
                log.info("log_file_expired", path=str(path))
        by_file: dict[Path, list[str]] = {}
        for line in lines:
            when = dt.datetime.fromisoformat(line["time"])
            by_file.setdefault(self._path(when), []).append(
                json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n"
            )
        for path, texts in by_file.items():
            with path.open("a", encoding="utf-8") as fh:
                fh.write("".join(texts))

    async def _run(self) -> None:
        done = False
        while not done:
            lines = [await self._queue.get()]
            while not self._queue.empty():
                lines.append(self._queue.get_nowait())
            done = None in lines
            batch = [line for line in lines if line is not None]
            if not batch:
                continue
            try:
                await asyncio.to_thread(self._write, batch)
                AUDIT_WRITTEN.inc(len(batch))
            except OSError as exc:
                AUDIT_DROPPED.labels("write_failed").inc(len(batch))
                log.error("audit_write_failed", error=str(exc), lines=len(batch))


def now_iso() -> str:
    """The current UTC time, ISO 8601."""
    return dt.datetime.now(dt.UTC).isoformat()
