"""A typed client of RouterService through Envoy's internal listener: the caller's
credential and request id ride along as metadata, and a failed call comes back as the
OpenAI error the HTTP client should see."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from headrace.router.v1 import router_pb2, router_pb2_grpc
from headrace.services.openai.translate import api_error
from headrace.services.runtime.logs import REQUEST_ID_HEADER


def _metadata(authorization: str, request_id: str) -> tuple[tuple[str, str], ...]:
    metadata: list[tuple[str, str]] = []
    if authorization:
        metadata.append(("authorization", authorization))
    if request_id:
        metadata.append((REQUEST_ID_HEADER, request_id))
    return tuple(metadata)


class Generation:
    """One Generate stream. `first()` waits for the first message (or the error that
    replaces it) before anything is sent to the HTTP client, so errors keep their HTTP
    status; `rest()` yields the others; `cancel()` ends the call (client gone)."""

    def __init__(self, call: grpc.aio.UnaryStreamCall) -> None:
        self._call = call

    async def first(self) -> router_pb2.GenerateResponse:
        message = await self._read()
        if message is None:
            raise api_error(grpc.StatusCode.INTERNAL, "the router ended the stream without text")
        return message

    async def rest(self) -> AsyncIterator[router_pb2.GenerateResponse]:
        while (message := await self._read()) is not None:
            yield message

    async def _read(self) -> router_pb2.GenerateResponse | None:
        try:
            message = await self._call.read()
        except grpc.aio.AioRpcError as exc:
            raise api_error(
                exc.code(), exc.details() or "", exc.trailing_metadata() or ()
            ) from None
        if message is grpc.aio.EOF:
            return None
        return message  # type: ignore[return-value]

    def cancel(self) -> None:
        self._call.cancel()


class RouterClient:
    """RouterService, as the front door uses it."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = router_pb2_grpc.RouterServiceStub(channel)

    def generate(
        self,
        request: router_pb2.GenerateRequest,
        authorization: str,
        request_id: str,
        timeout: float,
    ) -> Generation:
        call = self._stub.Generate(
            request, timeout=timeout, metadata=_metadata(authorization, request_id)
        )
        return Generation(call)

    async def models(
        self, authorization: str, request_id: str, timeout: float
    ) -> list[router_pb2.Model]:
        try:
            reply = await self._stub.ListModels(
                router_pb2.ListModelsRequest(),
                timeout=timeout,
                metadata=_metadata(authorization, request_id),
            )
        except grpc.aio.AioRpcError as exc:
            raise api_error(
                exc.code(), exc.details() or "", exc.trailing_metadata() or ()
            ) from None
        return list(reply.models)
