"""A small OpenAI-compatible provider for tests: POST /v1/chat/completions streamed as
server-sent events over HTTP/1.1 (keep-alive), on its own thread and event loop so
that any test (sync or async, or a suite in other processes) can call it.

`mode` decides the next answers: "ok" (chunks, then a usage chunk), "no_usage",
"429" (with `retry_after`), "500" (an error body that echoes the API key), "stall"
(headers, then silence), "die" (two chunks, then the connection is cut).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeProvider:
    words: tuple[str, ...] = ("Hosted", " answer", " here", ".")
    mode: str = "ok"
    retry_after: float = 2.0
    chunk_delay_s: float = 0.0
    echo_key_in_errors: str = ""
    """Text the 500 body echoes (a key, as careless providers do)."""
    received: list[Received] = field(default_factory=list)
    cancelled: int = 0
    """Streams whose client went away before the end."""
    connections: int = 0
    """TCP connections accepted (a pooled client reuses them)."""
    port: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _server: asyncio.AbstractServer | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> FakeProvider:
        ready = threading.Event()

        def main() -> None:
            self._loop = asyncio.new_event_loop()
            self._server = self._loop.run_until_complete(
                asyncio.start_server(self._connection, "127.0.0.1", self.port)
            )
            self.port = self._server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()
            self._loop.close()

        self._thread = threading.Thread(target=main, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        """Stop listening and cut every open connection (a provider that died)."""
        loop = self._loop
        if loop is None:
            return

        async def close() -> None:
            assert self._server is not None
            self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(close(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        assert self._thread is not None
        self._thread.join(5)
        self._loop = None

    def count(self) -> int:
        with self._lock:
            return len(self.received)

    def reset(self, mode: str = "ok") -> None:
        with self._lock:
            self.received.clear()
            self.mode = mode
            self.cancelled = 0
            self.connections = 0

    # ---- HTTP/1.1 ---------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode().split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip()
                    for k, _, v in (line.partition(":") for line in lines[1:] if line)
                }
                raw = await reader.readexactly(int(headers.get("content-length", "0")))
                body = json.loads(raw) if raw else {}
                with self._lock:
                    self.received.append(Received(path, headers, body))
                    mode = self.mode
                if method != "POST" or not path.endswith("/chat/completions"):
                    await self._plain(writer, 404, {"error": {"message": "not found"}})
                    continue
                if not await self._answer(mode, body, writer):
                    return
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _plain(
        self, writer: asyncio.StreamWriter, status: int, body: Any, extra: str = ""
    ) -> None:
        data = json.dumps(body).encode()
        writer.write(
            f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
            f"content-length: {len(data)}\r\n{extra}\r\n".encode()
            + data
        )
        await writer.drain()

    async def _answer(self, mode: str, body: dict[str, Any], writer: asyncio.StreamWriter) -> bool:
        """Answer one request; False when the connection must end."""
        if mode == "429":
            await self._plain(
                writer,
                429,
                {"error": {"message": "Rate limit reached", "type": "rate_limit"}},
                f"retry-after: {self.retry_after}\r\n",
            )
            return True
        if mode == "500":
            message = f"internal error; request used key {self.echo_key_in_errors}"
            await self._plain(writer, 500, {"error": {"message": message}})
            return True
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        await writer.drain()
        if mode == "stall":
            await asyncio.sleep(3600)
        created = int(time.time())

        async def event(payload: Any) -> None:
            data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            frame = b"data: " + data + b"\n\n"
            writer.write(f"{len(frame):x}\r\n".encode() + frame + b"\r\n")
            await writer.drain()

        def chunk(text: str | None, finish: str | None = None) -> dict[str, Any]:
            delta = {"content": text} if text is not None else {}
            return {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": created,
                "model": body.get("model", ""),
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }

        try:
            await event(chunk(""))
            for i, word in enumerate(self.words):
                if mode == "die" and i == 2:
                    writer.transport.abort()
                    return False
                if self.chunk_delay_s:
                    await asyncio.sleep(self.chunk_delay_s)
                await event(chunk(word))
            await event(chunk(None, "stop"))
            if mode != "no_usage":
                usage = {
                    "prompt_tokens": 11,
                    "completion_tokens": len(self.words),
                    "total_tokens": 11 + len(self.words),
                }
                await event({**chunk(None), "choices": [], "usage": usage})
            await event(b"[DONE]")
            writer.write(b"0\r\n\r\n")
            await writer.drain()
        except ConnectionError:
            with self._lock:
                self.cancelled += 1
            return False
        return True
