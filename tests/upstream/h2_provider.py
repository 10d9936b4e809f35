"""An OpenAI-compatible provider over TLS that offers HTTP/2 (ALPN "h2") only, written
with the `h2` protocol library: streamed chat answers, and a count of connections and
streams, to show that the upstream client speaks HTTP/2 and multiplexes on one pooled
connection."""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events

from headrace.services.runtime.tls import CertPaths


@dataclass
class H2Provider:
    certs: CertPaths
    words: tuple[str, ...] = ("Over", " HTTP/2", ".")
    delay_s: float = 0.05
    connections: int = 0
    streams: int = 0
    max_concurrent: int = 0
    port: int = 0
    _open: int = 0
    _loop: asyncio.AbstractEventLoop | None = None
    _thread: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def base_url(self) -> str:
        return f"https://localhost:{self.port}/v1"

    def start(self) -> H2Provider:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(str(self.certs.public), str(self.certs.public_key))
        context.set_alpn_protocols(["h2"])
        ready = threading.Event()

        def main() -> None:
            self._loop = asyncio.new_event_loop()
            server = self._loop.run_until_complete(
                asyncio.start_server(self._connection, "127.0.0.1", 0, ssl=context)
            )
            self.port = server.sockets[0].getsockname()[1]
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=main, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with self._lock:
            self.connections += 1
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        tasks: set[asyncio.Task[None]] = set()
        try:
            while data := await reader.read(65535):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.DataReceived):
                        conn.acknowledge_received_data(
                            event.flow_controlled_length, event.stream_id
                        )
                    elif isinstance(event, h2.events.StreamEnded):
                        task = asyncio.create_task(self._answer(conn, writer, event.stream_id))
                        tasks.add(task)
                        task.add_done_callback(tasks.discard)
                writer.write(conn.data_to_send())
                await writer.drain()
        except (ConnectionError, h2.exceptions.ProtocolError):
            pass
        finally:
            writer.close()

    async def _answer(
        self, conn: h2.connection.H2Connection, writer: asyncio.StreamWriter, stream_id: int
    ) -> None:
        with self._lock:
            self.streams += 1
            self._open += 1
            self.max_concurrent = max(self.max_concurrent, self._open)
        conn.send_headers(stream_id, [(":status", "200"), ("content-type", "text/event-stream")])
        for word in self.words:
            await asyncio.sleep(self.delay_s)
            chunk = {"choices": [{"index": 0, "delta": {"content": word}, "finish_reason": None}]}
            conn.send_data(stream_id, f"data: {json.dumps(chunk)}\n\n".encode())
            writer.write(conn.data_to_send())
        usage = {"prompt_tokens": 5, "completion_tokens": len(self.words), "total_tokens": 8}
        end = {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": usage}
        conn.send_data(stream_id, f"data: {json.dumps(end)}\n\ndata: [DONE]\n\n".encode())
        conn.end_stream(stream_id)
        writer.write(conn.data_to_send())
        with self._lock:
            self._open -= 1
