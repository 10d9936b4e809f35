"""Supervision of child processes with asyncio.

Each child runs in its own process group (so a Ctrl-C in the terminal reaches
only the launcher, which then stops children in order) and with
PR_SET_PDEATHSIG, so no child outlives a launcher killed with SIGKILL. A child
that exits unexpectedly is restarted with exponential backoff, reset once it
has stayed up for a while.

Why not circus or supervisord: both run their own daemon and event loop and
cannot be embedded in an asyncio program that also checks gRPC health; what we
need is ~100 lines on asyncio's subprocess support.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from headrace.services.runtime.logs import get_logger

log = get_logger(__name__)

_PR_SET_PDEATHSIG = 1
STABLE_AFTER_S = 30.0


def stop_with_parent() -> None:
    """Ask the kernel to send this process SIGTERM when its parent dies."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Child:
    """One supervised process."""

    name: str
    argv: Sequence[str]
    env: dict[str, str]
    pid_dir: Path
    backoff_s: float = 0.5
    backoff_max_s: float = 30.0
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    stopping: bool = False
    _task: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    async def _spawn(self) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            *self.argv,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            process_group=0,
            preexec_fn=stop_with_parent,
        )
        (self.pid_dir / f"{self.name}.pid").write_text(f"{process.pid}\n")
        log.info("process_started", process=self.name, pid=process.pid, restarts=self.restarts)
        return process

    async def _run(self) -> None:
        delay = self.backoff_s
        while not self.stopping:
            started = time.monotonic()
            self.process = await self._spawn()
            code = await self.process.wait()
            if self.stopping:
                break
            if time.monotonic() - started > STABLE_AFTER_S:
                delay = self.backoff_s
            log.error(
                "process_exited_restarting",
                process=self.name,
                exit_code=code,
                restart_in_s=round(delay, 2),
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.backoff_max_s)
            self.restarts += 1

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"supervise-{self.name}")

    async def stop(self, timeout_s: float) -> None:
        """SIGTERM, then SIGKILL after timeout_s; returns when the process is gone."""
        self.stopping = True
        process = self.process
        if process is not None and process.returncode is None:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                await asyncio.wait_for(process.wait(), timeout_s)
            except TimeoutError:
                log.warning("process_killed", process=self.name, after_s=timeout_s)
                try:
                    os.killpg(process.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                await process.wait()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        (self.pid_dir / f"{self.name}.pid").unlink(missing_ok=True)
        log.info("process_stopped", process=self.name)
