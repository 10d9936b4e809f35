"""A llama.cpp model serving several sequences at once by continuous batching.

One context holds `slots` sequences (llama.cpp's n_seq_max), each with its own
sampler chain and KV cells, as llama-server's slots do. A decode thread owns the
context and loops: admit waiting requests into free slots, build one batch with
the next token of every decoding sequence plus as much pending prompt as fits,
call llama_decode once, sample every sequence that produced logits, and hand
the step's pieces of text to their requests' asyncio queues at once, with one
event-loop wake-up for the whole step. A request that joins or leaves never
stalls the others. Greedy sequences (temperature 0, no repeat penalty) take the
highest logit straight from the logits array: the token llama.cpp's greedy
sampler picks, without building its 262k-entry candidate list (Gemma's
vocabulary) on the decode thread while the other decode threads wait.

A finished sequence's KV cells stay in its slot; a new request is placed in the
free slot whose cached tokens share the longest prefix with its prompt, and
only the rest of the prompt is evaluated (a shared system prompt is computed
once per slot). A cancelled request is dropped within one decode step and its
slot is free for the next one.

Speculation (Speculate, issue 22): a request generated with a `Hold` is prefilled
at once, while the router still has it checked, but nothing it decodes leaves the
engine until `Hold.commit()`: its first token is sampled and kept in the slot, and
the sequence then waits without decoding. A commit hands that token out at the
next step with no further decode; a cancel before the commit drops the sequence
within one step and clears the KV cells it wrote (those of a prefix an earlier,
checked request left in the slot stay), so an unchecked prompt is never reused as
a cached prefix. A hold only takes a free slot, and gives it up to a checked
request that would otherwise wait.

Backpressure: a sequence whose consumer (its gRPC stream, so its client) has
`stream_buffer` deltas not yet taken is skipped in the batch - paused, KV cells
and slot kept - until the consumer has taken half of them; the others decode on
at full speed. When every sequence is paused the decode thread sleeps.
"""

from __future__ import annotations

import asyncio
import ctypes
import hashlib
import os
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

import llama_cpp
import numpy as np
from llama_cpp import _internals as internals
from llama_cpp import _logger as llama_logger

from headrace.services.inference import metrics
from headrace.services.inference.settings import ModelSpec
from headrace.services.inference.text import TextAssembler
from headrace.services.runtime.chat_template import ChatTemplate, TemplateError
from headrace.services.runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    ResourceExhausted,
)
from headrace.services.runtime.llama_params import choose_extra_bufts, model_params
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
    grammar: str | None = None
    """A GBNF grammar every sampled token must keep the text a prefix of."""


Conversation = Sequence[Mapping[str, str]]
"""Turns as the chat template reads them: {"role": ..., "content": ...}."""

# llama_token_data as numpy sees it (id, logit, p), to hand llama.cpp's samplers a
# candidate array without a Python loop over the vocabulary.
_TOKEN_DATA = np.dtype([("id", np.int32), ("logit", np.float32), ("p", np.float32)], align=True)


def _token_array(data: np.ndarray) -> llama_cpp.llama_token_data_array:
    return llama_cpp.llama_token_data_array(
        data=data.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_token_data)),
        size=len(data),
        selected=-1,
        sorted=False,
    )


@dataclass
class Delta:
    """Text decoded since the last delta; the last one has finish_reason and usage."""

    text: str
    finish_reason: FinishReason | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


def model_revision(path: Path) -> str:
    """A short fingerprint of a GGUF: its size and its first and last MiB.

    Cheap at start (2 MiB read, not the whole file) and enough to tell two model
    files apart: the head holds the metadata and tensor layout, the tail the last
    tensors' data.
    """
    size = path.stat().st_size
    digest = hashlib.blake2b(str(size).encode(), digest_size=8)
    with path.open("rb") as fh:
        digest.update(fh.read(1 << 20))
        fh.seek(max(size - (1 << 20), 0))
        digest.update(fh.read(1 << 20))
    return digest.hexdigest()


def default_gpu_layers() -> int:
    """All layers when llama.cpp was built with GPU support, else none."""
    return -1 if llama_cpp.llama_supports_gpu_offload() else 0


class SpeculationDropped(Exception):
    """A held sequence ended before its commit (cancelled or preempted)."""


class Hold:
    """The gate of a speculative generation: prefill now, tokens only after commit().

    Used from the event loop; the decode thread reads the request's `held` flag."""

    def __init__(self) -> None:
        self.committed = False
        self.cancelled = False
        self.committed_at = 0.0
        self._request: _Request | None = None
        self._wake: threading.Condition | None = None

    def commit(self) -> None:
        """Release the generation: its tokens now flow as a plain Generate's would."""
        self.committed = True
        self.committed_at = time.perf_counter()
        request = self._request
        if request is not None and request.held:
            request.held = False
            assert self._wake is not None
            with self._wake:
                self._wake.notify()

    def cancel(self) -> None:
        """Drop the generation unless committed (the stream ends, the cells are cleared)."""
        if self.committed:
            return
        self.cancelled = True
        request = self._request
        if request is None:
            return  # generate() has not started: it refuses to
        request.cancel.set()
        request.emit(SpeculationDropped("speculation cancelled before its commit"))
        assert self._wake is not None
        with self._wake:
            self._wake.notify()


@dataclass(eq=False)
class _Request:
    """One generation, shared between the event loop and the decode thread."""

    tokens: list[int]
    sampling: Sampling
    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Delta | BaseException]
    cancel: threading.Event = field(default_factory=threading.Event)
    # decode-thread state
    sampler: llama_cpp.llama_sampler_p | None = None
    """The sampler chain; None for greedy decoding (the highest logit)."""
    grammar: llama_cpp.llama_sampler_p | None = None
    """The grammar sampler, checked after the chain picks a token (see _sample)."""
    chat: bool = False
    """A conversation: a control token (a new turn, the end of one) ends the reply."""
    pending: list[int] = field(default_factory=list)
    next_token: int | None = None
    generated: int = 0
    budget: int = 0
    text: TextAssembler | None = None
    arrived: float = field(default_factory=time.perf_counter)
    # Backpressure: text deltas queued for the consumer, and taken by it. Each
    # counter has a single writer (`emitted` the decode thread, `taken` the event
    # loop), so `+= 1` never loses an update without a lock; a reader may see the
    # other one a step old, which only moves a pause or a resume by one token.
    emitted: int = 0
    taken: int = 0
    paused: bool = False
    """Set by the decode thread while it skips this sequence for a full buffer."""
    held: bool = False
    """Speculative and not yet committed: nothing decoded may leave (see Hold)."""
    held_token: int | None = None
    """The first token, sampled while held, handed out at the commit."""
    kept: int = 0
    """Prompt tokens whose KV cells the slot held before this request (reused)."""

    @property
    def undelivered(self) -> int:
        """Deltas decoded for this request that its consumer has not taken yet."""
        return self.emitted - self.taken

    def emit(self, item: Delta | BaseException) -> None:
        """Hand one item to the request's stream, from any thread."""
        self.loop.call_soon_threadsafe(self.queue.put_nowait, item)


def _put_all(items: list[tuple[_Request, Delta]]) -> None:
    for request, delta in items:
        request.queue.put_nowait(delta)


def _deliver(items: list[tuple[_Request, Delta]]) -> None:
    """Hand a decode step's deltas to their streams: one wake-up per event loop,
    not one per sequence."""
    loops: dict[asyncio.AbstractEventLoop, list[tuple[_Request, Delta]]] = {}
    for request, delta in items:
        loops.setdefault(request.loop, []).append((request, delta))
    for loop, batch in loops.items():
        loop.call_soon_threadsafe(_put_all, batch)


@dataclass(eq=False)
class _Slot:
    """A sequence id in the context and the tokens whose KV cells it holds."""

    seq_id: int
    cached: list[int] = field(default_factory=list)
    request: _Request | None = None
    used: int = 0
    """When a request last took this slot (the engine's admission count): the least
    recently used free slot is the one a new line of requests takes."""


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class LlamaEngine:
    """One loaded model decoding up to `slots` sequences together, with a bounded queue."""

    def __init__(
        self,
        spec: ModelSpec,
        path: Path,
        slots: int,
        queue_size: int,
        model: internals.LlamaModel | None = None,
        stream_buffer: int = 256,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.slots = slots
        self.queue_size = queue_size
        self.stream_buffer = max(stream_buffer, 1)
        """Undelivered deltas at which a sequence stops decoding until its consumer reads."""
        threads = spec.threads or os.cpu_count() or 1
        self.gpu_layers = default_gpu_layers() if spec.gpu_layers is None else spec.gpu_layers
        started = time.perf_counter()
        # llama.cpp logs every context's construction to stderr unless told not to;
        # errors still come through.
        llama_logger.set_verbose(False)
        self._owns_model = model is None
        self.extra_bufts = choose_extra_bufts(spec.extra_buffer_types)
        """Whether this engine's weights use llama.cpp's extra buffer types, and why."""
        if model is None:
            params = model_params(gpu_layers=self.gpu_layers, extra_bufts=spec.extra_buffer_types)
            model = internals.LlamaModel(path_model=str(path), params=params, verbose=False)
        self.model = model
        self._model = model
        self._vocab = self._model.vocab
        self._bos_text = ""
        self._n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self.context_size = min(spec.context_size, self._model.n_ctx_train())
        self.revision = model_revision(path)
        ctx_params = llama_cpp.llama_context_default_params()
        # Every slot may fill a whole context window; the KV cache is shared.
        ctx_params.n_ctx = self.context_size * slots
        ctx_params.n_batch = spec.batch_size
        ctx_params.n_ubatch = min(spec.batch_size, 512)
        ctx_params.n_seq_max = slots
        ctx_params.kv_unified = True
        ctx_params.n_threads = threads
        ctx_params.n_threads_batch = threads
        ctx_params.no_perf = True
        self._ctx = internals.LlamaContext(model=self._model, params=ctx_params, verbose=False)
        self._memory = llama_cpp.llama_get_memory(self._ctx.ctx)
        self._adapters = self._apply_lora(spec)
        self._template = self._chat_template(spec)
        self._token_ids = np.arange(self._n_vocab, dtype=np.int32)
        self._batch = llama_cpp.llama_batch_init(spec.batch_size, 0, 1)
        self._slots = [_Slot(i) for i in range(slots)]
        self._waiting: deque[_Request] = deque()
        self._active = 0
        self._admissions = 0
        self._wake = threading.Condition()
        self._closing = False
        self.decode_thread_id = 0
        """The decode thread's native id (0 until it runs)."""
        engine = weakref.ref(self)
        metrics.PAUSED_SEQUENCES.labels(spec.name).set_function(
            lambda: e.paused_sequences() if (e := engine()) else 0
        )
        metrics.UNDELIVERED_DELTAS.labels(spec.name).set_function(
            lambda: e.undelivered_deltas() if (e := engine()) else 0
        )
        metrics.HELD_SEQUENCES.labels(spec.name).set_function(
            lambda: e.held_sequences() if (e := engine()) else 0
        )
        self._thread = threading.Thread(target=self._loop, name=f"decode-{spec.name}", daemon=True)
        self._thread.start()
        log.info(
            "model_loaded",
            model=spec.name,
            path=str(path),
            context_size=self.context_size,
            slots=slots,
            gpu_layers=self.gpu_layers,
            threads=threads,
            extra_buffer_types=self.extra_bufts.enabled,
            extra_buffer_types_reason=self.extra_bufts.reason,
            seconds=round(time.perf_counter() - started, 3),
        )

    def _apply_lora(self, spec: ModelSpec) -> list[llama_cpp.llama_adapter_lora_p]:
        adapters = []
        for lora in spec.lora:
            adapter = llama_cpp.llama_adapter_lora_init(self._model.model, str(lora.path).encode())
            if adapter is None:
                raise ValueError(f"model {spec.name!r}: cannot load LoRA adapter {lora.path}")
            adapters.append(adapter)
        if adapters:
            array = (llama_cpp.llama_adapter_lora_p_ctypes * len(adapters))(*adapters)
            scales = (ctypes.c_float * len(adapters))(*(lora.scale for lora in spec.lora))
            if llama_cpp.llama_set_adapters_lora(self._ctx.ctx, array, len(adapters), scales):
                raise ValueError(f"model {spec.name!r}: llama.cpp refused its LoRA adapters")
        return adapters

    def _chat_template(self, spec: ModelSpec) -> ChatTemplate | None:
        """The template from the registry entry, else the GGUF's, else none."""
        source = spec.chat_template
        if source is None or source == "gguf":
            source = self._model.metadata().get("tokenizer.chat_template")
            if not source and spec.chat_template == "gguf":
                raise ValueError(
                    f"model {spec.name!r}: chat_template is 'gguf' but the GGUF has no "
                    "tokenizer.chat_template; name a built-in (gemma, chatml) or give a template"
                )
            if not source:
                return None
        vocab = self._vocab
        bos = self._piece(llama_cpp.llama_vocab_bos(vocab), special=True).decode(errors="ignore")
        eos = self._piece(llama_cpp.llama_vocab_eos(vocab), special=True).decode(errors="ignore")
        self._bos_text = bos
        try:
            return ChatTemplate(source, bos_token=bos, eos_token=eos)
        except TemplateError as exc:
            raise ValueError(f"model {spec.name!r}: {exc}") from None

    # ---- event-loop side -------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        """A plain prompt's tokens (as one user turn when prompt_as_user_turn is set)."""
        if self._template is not None and self.spec.prompt_as_user_turn:
            return self.tokenize_chat([{"role": "user", "content": text}])
        return self._model.tokenize(text.encode(), add_bos=True, special=False)

    def tokenize_chat(self, messages: Conversation) -> list[int]:
        """A conversation rendered by the chat template, ready for the model's reply.

        The template's own text is tokenized with special tokens parsed; the turns'
        content without, so text that looks like a turn marker stays text. The same
        history always gives the same tokens, so a conversation's next turn finds its
        history's KV cells in a slot."""
        if self._template is None:
            raise FailedPrecondition(
                f"model {self.name!r} has no chat template; set chat_template in its "
                "registry entry ([[inference.models]]): a built-in name such as 'gemma' "
                "or 'chatml', or a Jinja template"
            )
        try:
            segments = self._template.render(messages)
        except TemplateError as exc:
            raise InvalidArgument(f"model {self.name!r}: {exc}") from None
        tokens: list[int] = []
        if not (segments and segments[0].special and segments[0].text.startswith(self._bos_text)):
            tokens.append(llama_cpp.llama_vocab_bos(self._vocab))
        for segment in segments:
            tokens.extend(
                self._model.tokenize(segment.text.encode(), add_bos=False, special=segment.special)
            )
        return tokens

    def grammar_sampler(self, grammar: str) -> llama_cpp.llama_sampler_p:
        """llama.cpp's grammar sampler for a GBNF grammar; InvalidArgument if it does
        not parse."""
        sampler = llama_cpp.llama_sampler_init_grammar(self._vocab, grammar.encode(), b"root")
        if not sampler:
            raise InvalidArgument(
                "the grammar does not parse (GBNF, with a `root` rule); check it with "
                "llama.cpp's grammar documentation"
            )
        return sampler

    async def generate(
        self, prompt: str | Conversation, sampling: Sampling, hold: Hold | None = None
    ) -> AsyncIterator[Delta]:
        """Stream deltas for a prompt or a conversation. Raises ResourceExhausted when
        the queue is full, FailedPrecondition for a conversation without a template.

        With `hold` (speculation) the prompt is prefilled but nothing is streamed until
        `hold.commit()`; `hold.cancel()` ends the stream with SpeculationDropped. A
        hold takes only a free slot: ResourceExhausted when there is none."""
        arrived = time.perf_counter()
        chat = not isinstance(prompt, str)
        tokens = self.tokenize_chat(prompt) if chat else self.tokenize(prompt)  # type: ignore[arg-type]
        if len(tokens) >= self.context_size:
            what = "the conversation" if chat else "prompt"
            raise InvalidArgument(
                f"{what} is {len(tokens)} tokens; model {self.name!r} has a context of "
                f"{self.context_size}: shorten it"
            )
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Delta | BaseException] = asyncio.Queue()
        request = _Request(
            arrived=arrived, tokens=tokens, sampling=sampling, loop=loop, queue=queue, chat=chat
        )
        if sampling.grammar is not None:
            request.grammar = self.grammar_sampler(sampling.grammar)
        if hold is not None:
            if hold.cancelled:
                self._free_samplers(request)
                raise SpeculationDropped("speculation cancelled before its prefill")
            request.held = not hold.committed
            hold._request, hold._wake = request, self._wake
        with self._wake:
            if request.held and self._active + len(self._waiting) >= self.slots:
                self._free_samplers(request)
                metrics.SPECULATIONS.labels(self.name, "refused").inc()
                raise ResourceExhausted(
                    f"model {self.name!r} has no free slot to prefill speculatively",
                    retry_after_s=0.0,
                )
            # Held speculations give way to a checked request (see _preempt_held).
            preemptible = 0 if request.held else self.held_sequences()
            if self._active + len(self._waiting) - preemptible >= self.slots + self.queue_size:
                self._free_samplers(request)
                metrics.REJECTED.labels(self.name).inc()
                raise ResourceExhausted(
                    f"model {self.name!r} is busy ({self.slots} decoding, "
                    f"{len(self._waiting)} waiting); retry shortly",
                    retry_after_s=1.0,
                )
            self._waiting.append(request)
            metrics.QUEUE_DEPTH.labels(self.name).set(len(self._waiting))
            self._wake.notify()
        first = last = 0.0
        finished: FinishReason | None = None
        resume_at = self.stream_buffer // 2
        failed = False
        try:
            while finished is None:
                item = await queue.get()
                if isinstance(item, BaseException):
                    # The engine's failure (or shutdown), not the client's; a dropped
                    # speculation is neither.
                    failed = not isinstance(item, SpeculationDropped)
                    raise item
                request.taken += 1
                if request.paused and request.undelivered <= resume_at:
                    # Half drained: wake the decode thread in case it sleeps
                    # because every sequence it holds is paused.
                    with self._wake:
                        self._wake.notify()
                now = time.perf_counter()
                if item.text:
                    if not first:
                        first = now
                        # A speculation's first token counts from its commit.
                        since = hold.committed_at if hold is not None else arrived
                        metrics.TIME_TO_FIRST_TOKEN.labels(self.name).observe(now - since)
                    else:
                        metrics.INTER_TOKEN_LATENCY.labels(self.name).observe(now - last)
                    last = now
                if item.finish_reason is not None:
                    finished = item.finish_reason
                    metrics.PROMPT_TOKENS.labels(self.name).inc(item.prompt_tokens)
                    metrics.GENERATION_TOKENS.labels(self.name).inc(item.completion_tokens)
                    metrics.E2E_LATENCY.labels(self.name).observe(now - arrived)
                    metrics.REQUESTS.labels(self.name, finished.value).inc()
                yield item
        finally:
            if hold is not None:
                outcome = "committed" if hold.committed else "dropped"
                metrics.SPECULATIONS.labels(self.name, outcome).inc()
            if finished is None:
                # Cancelled, disconnected or past its deadline: the decode thread
                # drops it at its next step and frees the slot.
                request.cancel.set()
                if hold is not None and not hold.committed:
                    pass  # never a request to the client: counted as a speculation only
                elif failed:
                    metrics.REQUESTS.labels(self.name, "error").inc()
                else:
                    metrics.CANCELLATIONS.labels(self.name).inc()
                    metrics.REQUESTS.labels(self.name, FinishReason.CANCELLED.value).inc()
                with self._wake:
                    self._wake.notify()

    def paused_sequences(self) -> int:
        """Sequences not decoding now because their consumer is behind."""
        return sum(1 for s in self._slots if s.request is not None and s.request.paused)

    def held_sequences(self) -> int:
        """Speculative sequences in a slot or waiting for one, not yet committed."""
        held = sum(1 for s in self._slots if (r := s.request) is not None and r.held)
        return held + sum(1 for r in list(self._waiting) if r.held)

    def undelivered_deltas(self) -> int:
        """Deltas decoded but not yet taken by their consumers, all sequences together."""
        return sum(max(r.undelivered, 0) for s in self._slots if (r := s.request) is not None)

    def close(self) -> None:
        self.close_context()
        self.close_model()

    def close_context(self) -> None:
        """Stop decoding and free this entry's context and adapters."""
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join(timeout=30)
        llama_cpp.llama_batch_free(self._batch)
        self._ctx.close()
        for adapter in self._adapters:
            llama_cpp.llama_adapter_lora_free(adapter)
        self._adapters = []

    def close_model(self) -> None:
        """Free the weights, if this engine loaded them."""
        if self._owns_model:
            self._model.close()

    # ---- decode thread ---------------------------------------------------

    def _piece(self, token: int, special: bool = False) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]

    def _sampler(self, s: Sampling) -> llama_cpp.llama_sampler_p:
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        add = llama_cpp.llama_sampler_chain_add
        if s.repeat_penalty != 1.0:
            add(
                chain,
                llama_cpp.llama_sampler_init_penalties(
                    self._n_vocab, 64, s.repeat_penalty, 0.0, 0.0
                ),
            )
        if s.temperature <= 0.0:
            add(chain, llama_cpp.llama_sampler_init_greedy())
            return chain
        if s.top_k > 0:
            add(chain, llama_cpp.llama_sampler_init_top_k(s.top_k))
        add(chain, llama_cpp.llama_sampler_init_top_p(s.top_p, 1))
        add(chain, llama_cpp.llama_sampler_init_temp(s.temperature))
        seed = s.seed if s.seed is not None else random.getrandbits(32)
        add(chain, llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF))
        return chain

    def _admit(self) -> None:
        """Move waiting requests into free slots, reusing the longest cached prefix."""
        while self._waiting:
            free = [s for s in self._slots if s.request is None]
            if not free and not self._waiting[0].held:
                free = self._preempt_held()
            if not free:
                return
            request = self._waiting.popleft()
            if request.cancel.is_set():
                self._free_samplers(request)
                continue
            slot, keep = self._place(free, request.tokens)
            metrics.PREFIX_REUSED_TOKENS.labels(self.name).inc(keep)
            metrics.PREFIX_REUSE_RATIO.labels(self.name).observe(keep / len(request.tokens))
            request.kept = keep
            request.pending = request.tokens[keep:]
            request.budget = min(
                request.sampling.max_tokens, self.context_size - len(request.tokens)
            )
            sampling = request.sampling
            greedy = sampling.temperature <= 0.0 and sampling.repeat_penalty == 1.0
            request.sampler = None if greedy else self._sampler(sampling)
            request.text = TextAssembler(request.sampling.stop)
            slot.request = request
            metrics.QUEUE_TIME.labels(self.name).observe(time.perf_counter() - request.arrived)
            self._active += 1

    def _place(self, free: list[_Slot], tokens: list[int]) -> tuple[_Slot, int]:
        """The slot a prompt takes and how many of its tokens' KV cells are reused.

        The longest prefix any slot holds is reused (a busy slot's too, unless its
        request is an unchecked speculation), but always at least the last prompt
        token is evaluated: its logits give the first sampled token. The prompt takes
        a free slot that loses nothing by it (its whole cache is a prefix of the
        prompt: the next turn of a conversation, or an empty slot), else the least
        recently used free slot. When another slot holds more of the prefix, it is
        shared into the taken one with llama_memory_seq_cp (the unified cache's cells
        gain a sequence id: nothing is recomputed or copied), so the slot that held it
        keeps the rest of its cache for its own next request: interleaved lines of
        requests that share a system prompt do not evict each other's history."""
        self._admissions += 1
        # Every free slot is a source too (it has no request).
        sources = [s for s in self._slots if s.request is None or not s.request.held]
        common = {s.seq_id: _common_prefix(s.cached, tokens) for s in sources}
        source = max(sources, key=lambda s: common[s.seq_id])
        keep = min(common[source.seq_id], len(tokens) - 1)
        lossless = [s for s in free if common[s.seq_id] == len(s.cached)]
        if lossless:
            slot = max(lossless, key=lambda s: common[s.seq_id])
        else:
            slot = min(free, key=lambda s: s.used)
        if common[slot.seq_id] >= keep:
            llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, keep, -1)
            del slot.cached[keep:]
        else:
            llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
            llama_cpp.llama_memory_seq_cp(self._memory, source.seq_id, slot.seq_id, 0, keep)
            slot.cached = source.cached[:keep]
            metrics.PREFIX_SHARED.labels(self.name).inc()
        slot.used = self._admissions
        return slot, keep

    def _preempt_held(self) -> list[_Slot]:
        """A checked request must not wait behind a speculation: drop one held
        sequence (its router then generates afresh) and return its slot."""
        for slot in self._slots:
            request = slot.request
            if request is not None and request.held:
                request.cancel.set()
                request.emit(SpeculationDropped("a checked request needed the slot"))
                log.info("speculation_preempted", model=self.name, slot=slot.seq_id)
                self._live(slot)
                return [slot]
        return []

    @staticmethod
    def _free_samplers(request: _Request) -> None:
        if request.sampler is not None:
            llama_cpp.llama_sampler_free(request.sampler)
            request.sampler = None
        if request.grammar is not None:
            llama_cpp.llama_sampler_free(request.grammar)
            request.grammar = None

    def _release(self, slot: _Slot) -> None:
        if slot.request is not None:
            self._free_samplers(slot.request)
        slot.request = None
        with self._wake:
            self._active -= 1
            metrics.BUSY_SLOTS.labels(self.name).set(self._active)

    def _finish(self, slot: _Slot, reason: FinishReason, tail: str = "") -> Delta:
        """Free the slot; the request's last delta, which the caller delivers. The
        slot is free before the last delta leaves, so a client that sends its next
        request on receipt always finds the slot free."""
        request = slot.request
        assert request is not None
        self._release(slot)
        return Delta(tail, reason, len(request.tokens), request.generated)

    def _sample(self, request: _Request, index: int) -> int:
        if request.grammar is not None:
            return self._sample_constrained(request, index)
        if request.sampler is not None:
            return llama_cpp.llama_sampler_sample(request.sampler, self._ctx.ctx, index)
        return int(self._logits(index).argmax())

    def _logits(self, index: int) -> np.ndarray:
        logits = llama_cpp.llama_get_logits_ith(self._ctx.ctx, index)
        return np.ctypeslib.as_array(logits, shape=(self._n_vocab,))

    def _pick(self, request: _Request, index: int, constrain: bool) -> int:
        """Sample from the whole vocabulary, first masking it by the grammar if asked."""
        if request.sampler is None and not constrain:
            return int(self._logits(index).argmax())
        data = np.empty(self._n_vocab, dtype=_TOKEN_DATA)
        data["id"] = self._token_ids
        data["logit"] = self._logits(index)
        data["p"] = 0.0
        array = _token_array(data)
        if constrain:
            llama_cpp.llama_sampler_apply(request.grammar, ctypes.byref(array))
        if request.sampler is None:  # greedy: the first highest logit
            return int(data["logit"].argmax())
        llama_cpp.llama_sampler_apply(request.sampler, ctypes.byref(array))
        return int(array.data[array.selected].id)

    def _sample_constrained(self, request: _Request, index: int) -> int:
        """As llama.cpp's common sampler does: pick a token as if unconstrained and
        check just that one against the grammar; only when the grammar rejects it,
        mask the whole vocabulary (262k entries for Gemma) and pick again. Most tokens
        pass the check, so a grammar costs the batch's other sequences little."""
        token = self._pick(request, index, constrain=False)
        one = np.array([(token, 1.0, 0.0)], dtype=_TOKEN_DATA)
        llama_cpp.llama_sampler_apply(request.grammar, ctypes.byref(_token_array(one)))
        if not np.isneginf(one["logit"][0]):
            metrics.GRAMMAR_CHECKS.labels(self.name, "accepted").inc()
        else:
            metrics.GRAMMAR_CHECKS.labels(self.name, "resampled").inc()
            token = self._pick(request, index, constrain=True)
        llama_cpp.llama_sampler_accept(request.grammar, token)
        if request.sampler is not None:
            llama_cpp.llama_sampler_accept(request.sampler, token)
        return token

    def _lower_priority(self) -> None:
        """Nice this (the decode) thread by spec.decode_nice, before llama.cpp starts
        its worker threads from it, so that they inherit it."""
        self.decode_thread_id = threading.get_native_id()
        if not self.spec.decode_nice:
            return
        try:
            now = os.getpriority(os.PRIO_PROCESS, self.decode_thread_id)
            os.setpriority(
                os.PRIO_PROCESS, self.decode_thread_id, min(now + self.spec.decode_nice, 19)
            )
        except OSError as exc:  # not Linux-like, or a sandbox that forbids it
            log.warning("decode_priority_unchanged", model=self.name, error=str(exc))

    def _loop(self) -> None:
        self._lower_priority()
        while True:
            with self._wake:
                while not self._closing and not self._waiting and self._active == 0:
                    self._wake.wait()
                if self._closing:
                    for slot in self._slots:
                        if slot.request is not None:
                            slot.request.emit(
                                ResourceExhausted("model is shutting down", retry_after_s=1.0)
                            )
                            self._release(slot)
                    return
                self._admit()
                metrics.QUEUE_DEPTH.labels(self.name).set(len(self._waiting))
                metrics.BUSY_SLOTS.labels(self.name).set(self._active)
            try:
                if not self._step():
                    self._wait_for_consumers()
            except Exception as exc:  # a failed decode fails its requests, not the thread
                log.exception("decode_failed", model=self.name)
                for slot in self._slots:
                    if slot.request is not None:
                        slot.request.emit(exc)
                        llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, -1, -1)
                        slot.cached.clear()
                        self._release(slot)

    def _wait_for_consumers(self) -> None:
        """Nothing was decodable: sleep until a consumer drains, a request is
        cancelled or can be admitted, or the engine closes."""
        with self._wake:
            if self._closing or (self._waiting and self._active < self.slots):
                return
            if (
                self._waiting
                and not self._waiting[0].held
                and any(s.request is not None and s.request.held for s in self._slots)
            ):
                return  # a checked request takes a held sequence's slot now
            for slot in self._slots:
                request = slot.request
                if request is not None and request.held_token is not None:
                    if not request.held:
                        return  # committed: its first token goes out now
                    continue  # waits for its commit without decoding
                if request is not None and (
                    request.cancel.is_set()
                    or not request.paused
                    or request.undelivered < self.stream_buffer
                ):
                    return
            # Consumers notify when half drained; the timeout is only a safety net.
            self._wake.wait(timeout=1.0)

    def _live(self, slot: _Slot) -> _Request | None:
        """The slot's request, or None: the slot is free, or its request was
        cancelled (the slot is freed now)."""
        request = slot.request
        if request is not None and request.cancel.is_set():
            if request.held:
                # An uncommitted speculation: its prompt was never checked, so its
                # cells must not serve a later request as a cached prefix.
                llama_cpp.llama_memory_seq_rm(self._memory, slot.seq_id, request.kept, -1)
                del slot.cached[request.kept :]
            self._release(slot)
            return None
        return request

    def _step(self) -> bool:
        """One llama_decode over every active sequence; False when none could decode."""
        batch = self._batch
        capacity = self.spec.batch_size
        n = 0
        sample_at: list[tuple[_Slot, int]] = []
        out: list[tuple[_Request, Delta]] = []
        for slot in self._slots:
            request = self._live(slot)
            if request is None:
                continue
            if request.held_token is not None and not request.held:
                # Committed: the token sampled at the end of its prefill goes out now,
                # not after this step's decode.
                token, request.held_token = request.held_token, None
                self._accept(slot, request, token, out)
                _deliver(out)
                out = []
                if slot.request is not request:
                    continue
            if request.next_token is not None and n < capacity:
                if request.undelivered >= self.stream_buffer:
                    # Its consumer is behind (a slow client): keep the KV cells and
                    # the sampled token, and decode the others without it.
                    request.paused = True
                    continue
                request.paused = False
                self._put(slot, request.next_token, n, logits=True)
                sample_at.append((slot, n))
                request.next_token = None
                n += 1
        for slot in self._slots:
            request = slot.request
            if request is None or not request.pending or n >= capacity:
                continue
            chunk = request.pending[: capacity - n]
            del request.pending[: len(chunk)]
            for i, token in enumerate(chunk):
                last = not request.pending and i == len(chunk) - 1
                self._put(slot, token, n, logits=last)
                if last:
                    sample_at.append((slot, n))
                n += 1
        if n == 0:
            return False
        batch.n_tokens = n
        metrics.BATCH_SIZE.labels(self.name).observe(len(sample_at))
        status = llama_cpp.llama_decode(self._ctx.ctx, batch)
        if status != 0:
            raise RuntimeError(f"llama_decode returned {status}")
        try:
            for slot, index in sample_at:
                request = self._live(slot)
                if request is None:
                    continue
                token = self._sample(request, index)
                if request.held:
                    # Speculative: the token waits in the slot for the commit.
                    request.held_token = token
                    continue
                self._accept(slot, request, token, out)
        finally:
            # Also when a later sequence fails: what was decided is delivered.
            if out:
                _deliver(out)
        return True

    def _accept(
        self, slot: _Slot, request: _Request, token: int, out: list[tuple[_Request, Delta]]
    ) -> None:
        """A sampled token's consequence: the end of the reply, or text and the next
        token to decode."""
        assert request.text is not None
        if llama_cpp.llama_vocab_is_eog(self._vocab, token) or (
            # A base model invents further turns: a new turn ends the reply.
            request.chat and llama_cpp.llama_vocab_is_control(self._vocab, token)
        ):
            out.append((request, self._finish(slot, FinishReason.STOP, request.text.finish())))
            return
        request.generated += 1
        text = request.text.feed(self._piece(token))
        if request.text.stopped:
            out.append((request, self._finish(slot, FinishReason.STOP, text)))
            return
        if request.generated >= request.budget:
            out.append(
                (request, self._finish(slot, FinishReason.LENGTH, text + request.text.finish()))
            )
            return
        if text:
            request.emitted += 1
            out.append((request, Delta(text)))
        request.next_token = token

    def _put(self, slot: _Slot, token: int, i: int, *, logits: bool) -> None:
        batch = self._batch
        batch.token[i] = token
        batch.pos[i] = len(slot.cached)
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = slot.seq_id
        batch.logits[i] = logits
        slot.cached.append(token)
