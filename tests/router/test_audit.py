"""The audit writer: one line per record, never blocks, never fails a request,
counts what it loses, and removes files past the retention period."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
from pathlib import Path

from prometheus_client import REGISTRY

from headrace.services.router.audit import AuditLog, now_iso


def dropped(reason: str) -> float:
    return (
        REGISTRY.get_sample_value("headrace_audit_lines_dropped_total", {"reason": reason}) or 0.0
    )


async def test_every_record_becomes_one_parseable_line(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, queue_size=100)
    log.start()
    for i in range(25):
        log.record({"time": now_iso(), "request_id": f"r{i}"})
    await log.close()
    lines = [
        json.loads(line)
        for f in tmp_path.glob("audit-*.jsonl")
        for line in f.read_text().splitlines()
    ]
    assert sorted(line["request_id"] for line in lines) == sorted(f"r{i}" for i in range(25))


async def test_a_full_queue_drops_and_counts_instead_of_waiting(tmp_path: Path) -> None:
    log = AuditLog(tmp_path, queue_size=2)  # not started: nothing drains the queue
    before = dropped("queue_full")
    for i in range(5):
        log.record({"time": now_iso(), "request_id": f"r{i}"})  # returns at once
    assert dropped("queue_full") == before + 3


async def test_a_failing_disk_is_counted_and_never_raises(tmp_path: Path) -> None:
    today = dt.datetime.now(dt.UTC)
    (tmp_path / f"audit-{today:%Y-%m-%d}.jsonl").mkdir()  # writing the file fails
    log = AuditLog(tmp_path, queue_size=10)
    log.start()
    before = dropped("write_failed")
    log.record({"time": now_iso(), "request_id": "lost"})
    await asyncio.wait_for(log.close(), 5)
    assert dropped("write_failed") == before + 1


def test_files_past_retention_are_removed(tmp_path: Path) -> None:
    for day in ("2026-01-01", "2026-11-20", "2026-11-25"):
        (tmp_path / f"audit-{day}.jsonl").write_text("{}\n")
    (tmp_path / "notes.txt").write_text("kept")
    log = AuditLog(tmp_path, queue_size=1, retention_days=30)
    removed = log.prune(today=dt.date(2026, 11, 25))
    assert [p.name for p in removed] == ["audit-2026-01-01.jsonl"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "audit-2026-11-20.jsonl",
        "audit-2026-11-25.jsonl",
        "notes.txt",
    ]
