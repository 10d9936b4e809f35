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
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import Counter

from headrace.services.runtime.logs import get_logger

log = get_logger(__name__)

RESTARTS = Counter(
    "headrace_launcher_restarts_total",
    "Times the launcher restarted a process that exited unexpectedly.",
    ["service"],
)
TAIL_LINES = 20
"""Lines of a process's own output kept for the message when it exits."""

_PR_SET_PDEATHSIG = 1
STABLE_AFTER_S = 30.0


def describe_exit(code: int) -> str:
    """'exit code 2' or 'killed by signal SIGSEGV (11)', from a returncode."""
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = "unknown signal"
        return f"killed by signal {name} ({-code})"
    return f"exit code {code}"


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
    on_exit: Callable[[Child, int], None] | None = None
    """Called with the returncode whenever the process exits unexpectedly."""
    tail: deque[str] = field(default_factory=lambda: deque(maxlen=TAIL_LINES))
    """The last lines the process wrote (stdout and stderr), for exit messages."""
    _task: asyncio.Task[None] | None = field(default=None, repr=False)
    _pump: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    async def _spawn(self) -> asyncio.subprocess.Process:
        process = await asyncio.create_subprocess_exec(
            *self.argv,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            # Through the launcher, so the last lines can name what went wrong when
            # the process dies; every line still reaches the launcher's stdout.
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            process_group=0,
            preexec_fn=stop_with_parent,
        )
        self.tail.clear()
        self._pump = asyncio.create_task(self._forward(process), name=f"output-{self.name}")
        (self.pid_dir / f"{self.name}.pid").write_text(f"{process.pid}\n")
        log.info("process_started", process=self.name, pid=process.pid, restarts=self.restarts)
        return process

    async def _forward(self, process: asyncio.subprocess.Process) -> None:
        """Copy the process's output to ours line by line, keeping the last lines."""
        assert process.stdout is not None
        out = sys.stdout.buffer
        while line := await process.stdout.readline():
            self.tail.append(line.decode(errors="replace").rstrip())
            out.write(line)
            out.flush()

    async def _exited(self) -> int:
        """Wait for the process and for the last of its output."""
        assert self.process is not None
        code = await self.process.wait()
        if self._pump is not None:
            try:
                await asyncio.wait_for(self._pump, 2.0)
            except TimeoutError:
                self._pump.cancel()  # a grandchild holds the pipe open
        return code

    def last_lines(self, count: int = TAIL_LINES) -> str:
        return "\n".join(list(self.tail)[-count:])

    async def _run(self) -> None:
        delay = self.backoff_s
        while not self.stopping:
            started = time.monotonic()
            self.process = await self._spawn()
            code = await self._exited()
            if self.stopping:
                break
            if self.on_exit is not None:
                self.on_exit(self, code)
            if time.monotonic() - started > STABLE_AFTER_S:
                delay = self.backoff_s
            log.error(
                "process_exited_restarting",
                process=self.name,
                exit_code=code,
                exit=describe_exit(code),
                last_output=self.last_lines(),
                restart_in_s=round(delay, 2),
                hint="run `headrace doctor`",
            )
            await asyncio.sleep(delay)
            if self.stopping:
                break
            delay = min(delay * 2, self.backoff_max_s)
            self.restarts += 1
            RESTARTS.labels(self.name).inc()

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
        if self._pump is not None and not self._pump.done():
            try:
                await asyncio.wait_for(self._pump, 2.0)
            except TimeoutError:
                self._pump.cancel()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        (self.pid_dir / f"{self.name}.pid").unlink(missing_ok=True)
        log.info("process_stopped", process=self.name)
