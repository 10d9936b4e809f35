"""A llama.cpp model that streams text as it is decoded.

Decoding runs on the model's own worker thread; each piece of text crosses to
the event loop through an asyncio queue as soon as its token is sampled. Text
leaves only as whole UTF-8 characters, and stop strings are never echoed: the
engine holds back only as many characters as the longest stop string could
still need. A cancelled consumer sets an event that the worker checks after
every token, so a cancelled sequence stops within one decode step.
"""

from __future__ import annotations

import asyncio
import codecs
import ctypes
import os
import random
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import llama_cpp

from headrace.services.inference import metrics
from headrace.services.inference.settings import ModelSpec
from headrace.services.runtime.errors import InvalidArgument, ResourceExhausted
from headrace.services.runtime.logs import get_logger

log = get_logger(__name__)


class FinishReason(StrEnum):
    STOP = "stop"
    LENGTH = "length"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class Sampling:
    """Decoding parameters, validated and with defaults filled in."""

    max_tokens: int
    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    repeat_penalty: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()


@dataclass
class Delta:
    """Text decoded since the last delta; the last one has finish_reason and usage."""

    text: str
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class _Sequence:
    """Per-request state shared between the event loop and the worker thread."""

    emit: Callable[[Delta | BaseException], None]
    cancel: threading.Event = field(default_factory=threading.Event)


def default_gpu_layers() -> int:
    """All layers when llama.cpp was built with GPU support, else none."""
    return -1 if llama_cpp.llama_supports_gpu_offload() else 0


class LlamaEngine:
    """One loaded model, decoding one sequence at a time with a bounded wait queue."""

    def __init__(self, spec: ModelSpec, path: Path, queue_size: int) -> None:
        self.spec = spec
        self.name = spec.name
        threads = spec.threads or os.cpu_count() or 1
        self.gpu_layers = default_gpu_layers() if spec.gpu_layers is None else spec.gpu_layers
        started = time.perf_counter()
        self.llm = llama_cpp.Llama(
            model_path=str(path),
            n_ctx=spec.context_size,
            n_batch=spec.batch_size,
            n_threads=threads,
            n_threads_batch=threads,
            n_gpu_layers=self.gpu_layers,
            verbose=False,
        )
        self.context_size = self.llm.n_ctx()
        self._vocab = self.llm._model.vocab
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"llama-{spec.name}")
        # One llama context decodes one sequence at a time here.
        self._slot = asyncio.Lock()
        self._queue_size = queue_size
        self._waiting = 0
        log.info(
            "model_loaded",
            model=spec.name,
            path=str(path),
            context_size=self.context_size,
            gpu_layers=self.gpu_layers,
            threads=threads,
            seconds=round(time.perf_counter() - started, 3),
        )

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
        self.llm.close()

    def _piece(self, token: int) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, False)
        return buf.raw[:n]

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode(), add_bos=True)

    async def generate(self, prompt: str, sampling: Sampling) -> AsyncIterator[Delta]:
        """Stream deltas for one prompt. Raises ResourceExhausted when the queue is full."""
        arrived = time.perf_counter()
        if self._slot.locked() and self._waiting >= self._queue_size:
            metrics.REJECTED.labels(self.name).inc()
            raise ResourceExhausted(
                f"model {self.name!r} is busy ({self._waiting} requests waiting); retry shortly",
                retry_after_s=1.0,
            )
        self._waiting += 1
        metrics.QUEUE_DEPTH.labels(self.name).inc()
        try:
            await self._slot.acquire()
        finally:
            self._waiting -= 1
            metrics.QUEUE_DEPTH.labels(self.name).dec()
        metrics.QUEUE_TIME.labels(self.name).observe(time.perf_counter() - arrived)
        metrics.BUSY_SLOTS.labels(self.name).inc()
        try:
            async for delta in self._stream(prompt, sampling, arrived):
                yield delta
        finally:
            metrics.BUSY_SLOTS.labels(self.name).dec()
            self._slot.release()

    async def _stream(
        self, prompt: str, sampling: Sampling, arrived: float
    ) -> AsyncIterator[Delta]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Delta | BaseException] = asyncio.Queue()
        seq = _Sequence(emit=lambda item: loop.call_soon_threadsafe(queue.put_nowait, item))
        worker = loop.run_in_executor(self._executor, self._decode, prompt, sampling, seq)
        first = last = 0.0
        finished: FinishReason | None = None
        try:
            while True:
                item = await queue.get()
                if isinstance(item, BaseException):
                    raise item
                now = time.perf_counter()
                if item.text:
                    if not first:
                        first = now
                        metrics.TIME_TO_FIRST_TOKEN.labels(self.name).observe(now - arrived)
                    else:
                        metrics.INTER_TOKEN_LATENCY.labels(self.name).observe(now - last)
                    last = now
                if item.finish_reason is not None:
                    finished = item.finish_reason
                    metrics.PROMPT_TOKENS.labels(self.name).inc(item.prompt_tokens)
                    metrics.GENERATION_TOKENS.labels(self.name).inc(item.completion_tokens)
                    metrics.E2E_LATENCY.labels(self.name).observe(now - arrived)
                yield item
                if finished is not None:
                    break
        finally:
            if finished is None:
                seq.cancel.set()
                metrics.CANCELLATIONS.labels(self.name).inc()
            # The slot is free only once the worker has let go of the context.
            try:
                await asyncio.shield(worker)
            except Exception:
                pass
            metrics.REQUESTS.labels(
                self.name, finished.value if finished else FinishReason.CANCELLED.value
            ).inc()

    def _decode(self, prompt: str, sampling: Sampling, seq: _Sequence) -> None:
        """Worker thread: decode until stop, length or cancel, emitting deltas."""
        try:
            self._decode_tokens(prompt, sampling, seq)
        except BaseException as exc:  # handed to the event loop, never lost
            seq.emit(exc)

    def _decode_tokens(self, prompt: str, sampling: Sampling, seq: _Sequence) -> None:
        tokens = self.tokenize(prompt)
        n_prompt = len(tokens)
        if n_prompt >= self.context_size:
            raise InvalidArgument(
                f"prompt is {n_prompt} tokens; model {self.name!r} has a context of "
                f"{self.context_size}: shorten it"
            )
        budget = min(sampling.max_tokens, self.context_size - n_prompt)
        self.llm.set_seed(sampling.seed if sampling.seed is not None else random.getrandbits(31))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        hold = max((len(s) for s in sampling.stop), default=1) - 1
        pending = ""
        generated = 0
        finish = FinishReason.LENGTH
        stopped_by_string = False
        generator = self.llm.generate(
            tokens,
            top_k=sampling.top_k,
            top_p=sampling.top_p,
            min_p=0.0,
            temp=sampling.temperature,
            repeat_penalty=sampling.repeat_penalty,
        )
        try:
            for token in generator:
                if seq.cancel.is_set():
                    finish = FinishReason.CANCELLED
                    break
                if llama_cpp.llama_vocab_is_eog(self._vocab, token):
                    finish = FinishReason.STOP
                    break
                generated += 1
                text = pending + decoder.decode(self._piece(token))
                if sampling.stop:
                    cut = min((i for s in sampling.stop if (i := text.find(s)) >= 0), default=-1)
                    if cut >= 0:
                        pending = text[:cut]
                        finish = FinishReason.STOP
                        stopped_by_string = True
                        break
                    keep = min(hold, len(text))
                    release, pending = text[: len(text) - keep], text[len(text) - keep :]
                else:
                    release, pending = text, ""
                if release:
                    seq.emit(Delta(release))
                if generated >= budget:
                    break
        finally:
            generator.close()
        if finish is not FinishReason.CANCELLED:
            tail = pending if stopped_by_string else pending + decoder.decode(b"", final=True)
            seq.emit(Delta(tail, finish, n_prompt, generated))
        else:
            seq.emit(Delta("", finish, n_prompt, generated))
