"""`headrace batch submit FILE`, `watch ID`, `get ID`: batch jobs from the shell.

A FILE holds one prompt per line (blank lines skipped); a `.jsonl` file holds one JSON
value per line, a string or an object with a "prompt". `-` reads standard input.
Results print as JSON lines, one per item, so they pipe into `jq` and friends.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import grpc
import typer

from headrace.cli_options import TargetOption, TokenOption

batch_app = typer.Typer(
    help="Batch jobs: many prompts run in the background (needs the running suite).",
    no_args_is_help=True,
)


def read_prompts(path: str) -> list[str]:
    """The prompts of a batch file (see the module's docstring)."""
    text = sys.stdin.read() if path == "-" else Path(path).read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if line.strip()]
    if not path.endswith(".jsonl"):
        return lines
    prompts = []
    for number, line in enumerate(lines, 1):
        value = json.loads(line)
        if isinstance(value, dict):
            value = value.get("prompt")
        if not isinstance(value, str):
            raise typer.BadParameter(f"line {number}: expected a string or {{'prompt': ...}}")
        prompts.append(value)
    return prompts


def result_json(result: Any) -> str:
    """One BatchResult as a JSON line."""
    from headrace.types.v1 import types_pb2

    line: dict[str, object] = {"index": result.index}
    if result.error:
        line["error"] = result.error
    else:
        line |= {
            "text": result.text,
            "finish_reason": types_pb2.FinishReason.Name(result.finish_reason)
            .removeprefix("FINISH_REASON_")
            .lower(),
            "model": result.model,
            "prompt_tokens": result.usage.prompt_tokens,
            "completion_tokens": result.usage.completion_tokens,
        }
    return json.dumps(line, ensure_ascii=False)


def _run(target: str, token: str | None, call: Any) -> None:
    """Run `call(stub, metadata)` against the router; a failure exits with its status."""
    from headrace.cli import _fail, _user_token
    from headrace.client import open_channel
    from headrace.router.v1 import router_pb2_grpc

    metadata = (("authorization", f"Bearer {_user_token(token, ttl=3600)}"),)

    async def run() -> None:
        async with open_channel(target) as channel:
            try:
                await call(router_pb2_grpc.RouterServiceStub(channel), metadata)
            except grpc.aio.AioRpcError as exc:
                _fail(exc)

    asyncio.run(run())


@batch_app.command("submit")
def submit(
    file: Annotated[str, typer.Argument(help="Prompts, one a line (.jsonl: JSON); - for stdin.")],
    model: Annotated[str, typer.Option(help="Model for every item (default: by task).")] = "",
    task: Annotated[str, typer.Option(help="Task preset for every item.")] = "",
    max_tokens: Annotated[int | None, typer.Option(help="Most tokens per item.")] = None,
    temperature: Annotated[float | None, typer.Option(help="0 for deterministic output.")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    target: TargetOption = "127.0.0.1:8080",
    token: TokenOption = None,
) -> None:
    """Queue a file of prompts; prints the batch id (last line)."""
    from headrace.client import sampling_params
    from headrace.router.v1 import router_pb2

    request = router_pb2.SubmitBatchRequest(
        prompts=read_prompts(file),
        model=model,
        task=task,
        params=sampling_params(temperature=temperature, max_tokens=max_tokens, seed=seed),
    )

    async def call(stub: Any, metadata: Any) -> None:
        reply = await stub.SubmitBatch(request, metadata=metadata, timeout=60)
        typer.echo(f"submitted {reply.total} prompts", err=True)
        typer.echo(reply.batch_id)

    _run(target, token, call)


@batch_app.command("watch")
def watch(
    batch_id: Annotated[str, typer.Argument(help="The id `batch submit` printed.")],
    target: TargetOption = "127.0.0.1:8080",
    token: TokenOption = None,
) -> None:
    """Print each result as a JSON line as it is stored; ends when the batch is done."""
    from headrace.router.v1 import router_pb2

    async def call(stub: Any, metadata: Any) -> None:
        request = router_pb2.WatchBatchRequest(batch_id=batch_id)
        async for message in stub.WatchBatch(request, metadata=metadata):
            typer.echo(result_json(message.result))

    _run(target, token, call)


@batch_app.command("get")
def get(
    batch_id: Annotated[str, typer.Argument(help="The id `batch submit` printed.")],
    target: TargetOption = "127.0.0.1:8080",
    token: TokenOption = None,
) -> None:
    """Print the batch's state and progress (stderr), then its results so far as JSON lines."""
    from headrace.router.v1 import router_pb2

    async def call(stub: Any, metadata: Any) -> None:
        request = router_pb2.GetBatchRequest(batch_id=batch_id)
        reply = await stub.GetBatch(request, metadata=metadata, timeout=30)
        state = router_pb2.BatchState.Name(reply.state).removeprefix("BATCH_STATE_")
        typer.echo(f"{state.lower()}: {reply.done}/{reply.total} done", err=True)
        for result in reply.results:
            typer.echo(result_json(result))

    _run(target, token, call)
