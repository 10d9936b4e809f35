"""The `headrace` command: run the suite, issue tokens, generate, list models."""

from __future__ import annotations

import asyncio
import getpass
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

import grpc
import typer

from headrace.batch_cli import batch_app
from headrace.cli_options import TargetOption, TokenOption

app = typer.Typer(help="Headrace: a self-hosted LLM gateway.", no_args_is_help=True)
token_app = typer.Typer(help="JSON Web Tokens for the gateway.", no_args_is_help=True)
app.add_typer(token_app, name="token")
keys_app = typer.Typer(help="Signing keys under HEADRACE_HOME/keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
apikey_app = typer.Typer(help="API keys (needs the running suite).", no_args_is_help=True)
app.add_typer(apikey_app, name="apikey")
cache_app = typer.Typer(help="The response cache (needs the running suite).", no_args_is_help=True)
app.add_typer(cache_app, name="cache")
experiments_app = typer.Typer(help="A/B experiments (reads HEADRACE_HOME).", no_args_is_help=True)
app.add_typer(experiments_app, name="experiments")
envoy_app = typer.Typer(help="Envoy's configuration for other hosts.", no_args_is_help=True)
app.add_typer(envoy_app, name="envoy")
app.add_typer(batch_app, name="batch")


def _home() -> Path:
    from headrace.services.runtime.settings import HeadraceSettings

    return HeadraceSettings().home


def _mint(subject: str, ttl: int | None, scopes: list[str] | None, tier: str) -> str:
    from headrace.services.auth.keys import KeyStore
    from headrace.services.auth.settings import TokenSettings
    from headrace.services.auth.tokens import issue_token

    settings = TokenSettings()
    return issue_token(
        KeyStore(settings.home / "keys"),
        settings,
        subject,
        ttl_seconds=ttl,
        scopes=scopes,
        tier=tier,
    )


def _user_token(token: str | None, ttl: int = 600) -> str:
    """The given token, or a short-lived one for the local user minted from the keys."""
    return token or _mint(f"cli:{getpass.getuser()}", ttl, None, "free")


def _admin_token(token: str | None) -> str:
    """The given token, or a five-minute admin token minted from the local keys."""
    return token or _mint(f"cli-admin:{getpass.getuser()}", 300, ["admin"], "unlimited")


def _call(target: str, bearer: str, service: str, method: str, request: object) -> object:
    """One unary RPC through Envoy's public listener; a failure exits with its status."""
    from headrace.auth.v1 import auth_pb2_grpc
    from headrace.cache.v1 import cache_pb2_grpc
    from headrace.router.v1 import router_pb2_grpc

    stub_class = {
        "auth": auth_pb2_grpc.AuthServiceStub,
        "cache": cache_pb2_grpc.CacheServiceStub,
        "router": router_pb2_grpc.RouterServiceStub,
    }[service]

    from headrace.client import open_channel

    async def run() -> object:
        async with open_channel(target) as channel:
            stub = stub_class(channel)
            try:
                return await getattr(stub, method)(
                    request, metadata=(("authorization", f"Bearer {bearer}"),), timeout=10
                )
            except grpc.aio.AioRpcError as exc:
                _fail(exc)
                raise

    return asyncio.run(run())


def _admin_call(
    target: str, token: str | None, method: str, request: object, service: str = "auth"
) -> object:
    """Call an admin RPC (auth or cache service) with an admin token."""
    return _call(target, _admin_token(token), service, method, request)


def _fail(exc: grpc.aio.AioRpcError) -> None:
    typer.secho(f"error: {exc.code().name}: {exc.details()}", fg="red", err=True)
    raise typer.Exit(2)


@app.command()
def certs(
    san: Annotated[
        list[str] | None,
        typer.Option(help="Another name or IP for the certificates (repeatable)."),
    ] = None,
    force: Annotated[bool, typer.Option(help="Replace existing certificates.")] = False,
    days: Annotated[int, typer.Option(help="Validity of the two certificates.")] = 365,
) -> None:
    """Write the CA and certificates for HEADRACE_TLS under HEADRACE_HOME/certs."""
    from headrace.services.runtime.settings import HeadraceSettings
    from headrace.services.runtime.tls import make_certs

    paths = HeadraceSettings().cert_paths
    written = make_certs(paths, list(san or []), force=force, days=days)
    if not written:
        typer.echo(f"certificates exist in {paths.root} (--force replaces them)")
        return
    for path in written:
        typer.echo(f"wrote {path}")
    typer.echo(f"clients verify the gateway with {paths.ca} (HEADRACE_CA_CERT)")


@app.command()
def up() -> None:
    """Start every service and Envoy; Ctrl-C stops them all."""
    from headrace.services.launcher.__main__ import main as launcher_main

    raise typer.Exit(launcher_main())


@app.command()
def doctor(
    decode: Annotated[
        bool, typer.Option(help="Decode the default model in a child process (~10 s).")
    ] = True,
) -> None:
    """Check this machine and installation: OK/WARN/FAIL with a fix each; exit 1 on FAIL."""
    from headrace.services.launcher.doctor import main as doctor_main

    raise typer.Exit(doctor_main(decode))


@envoy_app.command(
    "render",
    add_help_option=False,
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def envoy_render(ctx: typer.Context) -> None:
    """Envoy's config for services reached by DNS name (Compose, Kubernetes); --help for more."""
    from headrace.envoy.render import main as render_main

    raise typer.Exit(render_main(ctx.args))


@app.command(
    add_help_option=False,
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def finetune(ctx: typer.Context) -> None:
    """Train a LoRA adapter on Q&A JSONL and serve it as BASE:NAME (--help for more;
    needs the finetune extra, docs/finetune.md)."""
    import subprocess
    import sys

    # Its own process: training must never share one with anything that serves.
    command = [sys.executable, "-m", "headrace.services.finetune", *ctx.args]
    raise typer.Exit(subprocess.call(command))


@token_app.command("issue")
def token_issue(
    subject: Annotated[str, typer.Option("--subject", "-s", help="Who the token names (sub).")],
    ttl: Annotated[int | None, typer.Option(help="Lifetime in seconds (default 1 day).")] = None,
    scopes: Annotated[
        list[str] | None,
        typer.Option(
            "--scope",
            "--scopes",
            help="Granted scope, repeatable or comma-separated: generate, model:NAME, admin.",
        ),
    ] = None,
    tier: Annotated[str, typer.Option(help="Quota tier.")] = "free",
) -> None:
    """Print a signed token (the last line of stdout) that the running suite accepts."""
    from headrace.services.runtime.errors import HeadraceError

    flat = [s.strip() for item in scopes or [] for s in item.split(",") if s.strip()]
    try:
        token = _mint(subject, ttl, flat or None, tier)
    except HeadraceError as exc:
        typer.secho(f"error: {exc.message}", fg="red", err=True)
        raise typer.Exit(2) from None
    typer.echo(token)


@keys_app.command("rotate")
def keys_rotate() -> None:
    """Make a new signing key; new tokens use it, tokens of older keys verify until they expire."""
    from headrace.services.auth.keys import KeyStore
    from headrace.services.auth.settings import TokenSettings

    key = KeyStore(TokenSettings().home / "keys").create_key(activate=True)
    typer.echo(f"active key: {key.kid}")


@keys_app.command("list")
def keys_list() -> None:
    """List signing keys; the active one is marked."""
    from headrace.services.auth.keys import KeyStore
    from headrace.services.auth.settings import TokenSettings

    active, keys = KeyStore(TokenSettings().home / "keys").load()
    for kid in keys:
        typer.echo(f"{kid}{'  (active)' if kid == active else ''}")


@keys_app.command("remove")
def keys_remove(kid: Annotated[str, typer.Argument(help="Key id from `keys list`.")]) -> None:
    """Delete a retired key: tokens it signed stop verifying."""
    from headrace.services.auth.keys import KeyStore
    from headrace.services.auth.settings import TokenSettings

    try:
        KeyStore(TokenSettings().home / "keys").remove(kid)
    except (KeyError, ValueError) as exc:
        typer.secho(f"error: {exc.args[0]}", fg="red", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"removed {kid}")


@apikey_app.command("create")
def apikey_create(
    subject: Annotated[str, typer.Option("--subject", "-s", help="Who the key acts as.")],
    scopes: Annotated[list[str] | None, typer.Option("--scope", help="Granted scope.")] = None,
    tier: Annotated[str, typer.Option(help="Quota tier.")] = "free",
    name: Annotated[str, typer.Option(help="A label for people.")] = "",
    target: TargetOption = "127.0.0.1:8080",
    token: TokenOption = None,
) -> None:
    """Create an API key; it is printed once (last line) and stored only as a hash."""
    from headrace.auth.v1 import auth_pb2

    reply = _admin_call(
        target,
        token,
        "CreateApiKey",
        auth_pb2.CreateApiKeyRequest(subject=subject, scopes=scopes or [], tier=tier, name=name),
    )
    typer.secho("Store this key now; it cannot be shown again:", err=True, fg="yellow")
    typer.echo(reply.api_key)  # type: ignore[attr-defined]


@apikey_app.command("list")
def apikey_list(target: TargetOption = "127.0.0.1:8080", token: TokenOption = None) -> None:
    """List API keys (ids, subjects, scopes; never secrets)."""
    from headrace.auth.v1 import auth_pb2

    reply = _admin_call(target, token, "ListApiKeys", auth_pb2.ListApiKeysRequest())
    for key in reply.keys:  # type: ignore[attr-defined]
        state = "revoked" if key.revoked else "active"
        typer.echo(
            f"{key.key_id}\t{key.subject}\t{' '.join(key.scopes)}\t{key.tier}\t{state}\t{key.name}"
        )


@apikey_app.command("revoke")
def apikey_revoke(
    key_id: Annotated[str, typer.Argument(help="The key id (hr_xxxxxxxx).")],
    target: TargetOption = "127.0.0.1:8080",
    token: TokenOption = None,
) -> None:
    """Revoke an API key at once."""
    from headrace.auth.v1 import auth_pb2

    _admin_call(target, token, "RevokeApiKey", auth_pb2.RevokeApiKeyRequest(key_id=key_id))
    typer.echo(f"revoked {key_id}")


@cache_app.command("stats")
def cache_stats(target: TargetOption = "127.0.0.1:8080", token: TokenOption = None) -> None:
    """Hits, shared, misses, stores and entries of the response cache."""
    from headrace.cache.v1 import cache_pb2

    reply = _admin_call(target, token, "GetStats", cache_pb2.GetStatsRequest(), "cache")
    for name in ("backend", "entries", "hits", "shared", "semantic", "misses", "stores", "errors"):
        typer.echo(f"{name + ':':<10}{getattr(reply, name)}")
    lookups = reply.hits + reply.shared + reply.semantic + reply.misses  # type: ignore[attr-defined]
    if lookups:
        rate = (reply.hits + reply.shared + reply.semantic) / lookups  # type: ignore[attr-defined]
        typer.echo(f"{'hit rate:':<10}{rate:.1%}")


@cache_app.command("flush")
def cache_flush(
    model: Annotated[str, typer.Option(help="Only this model's entries.")] = "",
    target: TargetOption = "127.0.0.1:8080",
    token: TokenOption = None,
) -> None:
    """Delete cached responses (all, or one model's)."""
    from headrace.cache.v1 import cache_pb2

    reply = _admin_call(target, token, "Flush", cache_pb2.FlushRequest(model=model), "cache")
    typer.echo(f"deleted {reply.deleted} entries")  # type: ignore[attr-defined]


@experiments_app.command("report")
def experiments_report(
    name: Annotated[str, typer.Argument(help="The experiment's name in settings.")],
) -> None:
    """Per arm: requests, ratings (mean, 95% CI), p50 latency, tokens; Welch's t-test."""
    from headrace.services.router.experiments import render_report, report

    typer.echo(render_report(name, report(name, _home())))


@app.command()
def tasks(target: TargetOption = "127.0.0.1:8080", token: TokenOption = None) -> None:
    """List task presets: models and sampling parameters."""
    from google.protobuf import json_format

    from headrace.router.v1 import router_pb2

    reply = _call(target, _user_token(token), "router", "ListTasks", router_pb2.ListTasksRequest())
    for task in reply.tasks:  # type: ignore[attr-defined]
        params = json_format.MessageToDict(task.params)
        models = ", ".join(task.models) or "(default)"
        typer.echo(f"{task.name:<10} models: {models:<24} params: {params}  {task.description}")


@app.command()
def feedback(
    request_id: Annotated[str, typer.Argument(help="GenerateResponse.request_id.")],
    rating: Annotated[float, typer.Argument(help="1 (bad) to 5 (good).")],
    comment: Annotated[str, typer.Option(help="Optional comment.")] = "",
    target: TargetOption = "127.0.0.1:8080",
    token: TokenOption = None,
) -> None:
    """Rate one of your responses (for A/B reports)."""
    from headrace.router.v1 import router_pb2

    request = router_pb2.FeedbackRequest(request_id=request_id, rating=rating, comment=comment)
    _call(target, _user_token(token), "router", "Feedback", request)
    typer.echo("recorded")


@app.command()
def usage(
    subject: Annotated[str, typer.Argument(help="The subject.")],
    target: TargetOption = "127.0.0.1:8080",
    token: TokenOption = None,
) -> None:
    """Show a subject's token use and limits."""
    from headrace.auth.v1 import auth_pb2

    reply = _admin_call(target, token, "GetUsage", auth_pb2.GetUsageRequest(subject=subject))

    def limit(value: int) -> str:
        return str(value) if value else "unlimited"

    typer.echo(f"subject:            {reply.subject}")  # type: ignore[attr-defined]
    typer.echo(f"tier:               {reply.tier}")  # type: ignore[attr-defined]
    typer.echo(f"requests/minute:    {limit(reply.requests_per_minute)}")  # type: ignore[attr-defined]
    typer.echo(f"tokens today:       {reply.tokens_today} / {limit(reply.tokens_per_day)}")  # type: ignore[attr-defined]
    typer.echo(f"tokens this month:  {reply.tokens_this_month} / {limit(reply.tokens_per_month)}")  # type: ignore[attr-defined]


JsonSchemaOption = Annotated[
    Path | None,
    typer.Option(
        "--json-schema",
        help="A JSON Schema file: the reply is JSON that validates against it.",
        exists=True,
        dir_okay=False,
    ),
]


@app.command()
def upstreams() -> None:
    """Hosted models' free allowances: used and left this minute, today and this month
    (reads headrace.toml and Redis; needs no running suite)."""
    from headrace.services.upstream.report import allowance_report
    from headrace.services.upstream.settings import UpstreamSettings

    for line in asyncio.run(allowance_report(UpstreamSettings())):
        typer.echo(line)


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="The prompt.")],
    model: Annotated[str, typer.Option(help="Model name (default model if empty).")] = "",
    task: Annotated[str, typer.Option(help="Task preset.")] = "",
    max_tokens: Annotated[int | None, typer.Option(help="Most tokens to generate.")] = None,
    temperature: Annotated[float | None, typer.Option(help="0 for deterministic output.")] = None,
    top_p: Annotated[float | None, typer.Option()] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    stop: Annotated[list[str] | None, typer.Option(help="Stop string (repeatable).")] = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Bypass the cache.")] = False,
    json_schema: JsonSchemaOption = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Print usage after.")] = False,
    target: TargetOption = "127.0.0.1:8080",
    token: TokenOption = None,
) -> None:
    """Stream a completion to the terminal as it is generated."""
    from headrace.client import Client, sampling_params

    bearer = _user_token(token, ttl=3600)
    params = sampling_params(
        temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed, stop=stop or ()
    )
    options = {"model": model, "task": task, "params": params, "bypass_cache": no_cache}

    async def run() -> None:
        async with Client(target, bearer) as client:
            try:
                await _print_stream(
                    client.stream(prompt, response_format=_schema(json_schema), **options),
                    verbose,
                )
            except grpc.aio.AioRpcError as exc:
                _fail(exc)

    asyncio.run(run())


def _schema(path: Path | None) -> object:
    from headrace.client import response_format

    return None if path is None else response_format(json_schema=path.read_text())


async def _print_stream(stream: AsyncIterator[object], verbose: bool) -> str:
    """Write a Generate stream's text as it arrives; the whole text."""
    from headrace.types.v1 import types_pb2

    text = []
    async for message in stream:
        if message.text:  # type: ignore[attr-defined]
            text.append(message.text)  # type: ignore[attr-defined]
            sys.stdout.write(message.text)  # type: ignore[attr-defined]
            sys.stdout.flush()
        if message.finish_reason:  # type: ignore[attr-defined]
            sys.stdout.write("\n")
            sys.stdout.flush()
            if verbose:
                m = message
                typer.secho(
                    f"[{m.model}] finish={types_pb2.FinishReason.Name(m.finish_reason)}"  # type: ignore[attr-defined]
                    f" prompt_tokens={m.usage.prompt_tokens}"  # type: ignore[attr-defined]
                    f" completion_tokens={m.usage.completion_tokens}"  # type: ignore[attr-defined]
                    f" cached={m.cached} task={m.task or '-'}"  # type: ignore[attr-defined]
                    f" arm={m.arm or '-'} request_id={m.request_id}"  # type: ignore[attr-defined]
                    + (f" provider={m.provider}" if m.provider else ""),  # type: ignore[attr-defined]
                    err=True,
                    fg="cyan",
                )
    return "".join(text)


@app.command()
def chat(
    system: Annotated[str, typer.Option(help="A system turn that starts the conversation.")] = "",
    model: Annotated[str, typer.Option(help="Model name (default model if empty).")] = "",
    task: Annotated[str, typer.Option(help="Task preset.")] = "",
    max_tokens: Annotated[int | None, typer.Option(help="Most tokens per reply.")] = None,
    temperature: Annotated[float | None, typer.Option(help="0 for deterministic output.")] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    json_schema: JsonSchemaOption = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Bypass the cache.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Print usage after.")] = False,
    target: TargetOption = "127.0.0.1:8080",
    token: TokenOption = None,
) -> None:
    """Talk with a model: each line you type is a turn; replies stream as they are
    generated and the conversation is kept (/reset starts over, /exit or EOF ends)."""
    from headrace.client import Client, sampling_params
    from headrace.types.v1 import types_pb2

    bearer = _user_token(token, ttl=3600)
    params = sampling_params(temperature=temperature, max_tokens=max_tokens, seed=seed)
    options = {"model": model, "task": task, "params": params, "bypass_cache": no_cache}
    start = [types_pb2.ChatMessage(role=types_pb2.ROLE_SYSTEM, content=system)] if system else []
    interactive = sys.stdin.isatty()

    async def run() -> None:
        history = list(start)
        async with Client(target, bearer) as client:
            while True:
                line = await asyncio.to_thread(_read_turn, interactive)
                if line is None or line.strip() == "/exit":
                    return
                if line.strip() == "/reset":
                    history = list(start)
                    continue
                if not line.strip():
                    continue
                turn = types_pb2.ChatMessage(role=types_pb2.ROLE_USER, content=line)
                try:
                    reply = await _print_stream(
                        client.chat(
                            [*history, turn], response_format=_schema(json_schema), **options
                        ),
                        verbose,
                    )
                except grpc.aio.AioRpcError as exc:
                    if not interactive:
                        _fail(exc)
                    typer.secho(f"error: {exc.code().name}: {exc.details()}", err=True, fg="red")
                    continue
                history += [
                    turn,
                    types_pb2.ChatMessage(role=types_pb2.ROLE_ASSISTANT, content=reply),
                ]

    asyncio.run(run())


def _read_turn(interactive: bool) -> str | None:
    try:
        if interactive:
            return input("you> ")
        line = sys.stdin.readline()
        return line.rstrip("\n") if line else None
    except EOFError:
        return None


@app.command()
def models(target: TargetOption = "127.0.0.1:8080", token: TokenOption = None) -> None:
    """List the models the gateway serves."""
    from headrace.client import Client

    bearer = _user_token(token)

    async def run() -> None:
        async with Client(target, bearer) as client:
            try:
                for m in await client.list_models():
                    mark = " (default)" if m.is_default else ""
                    aliases = f"\taliases={','.join(m.aliases)}" if m.aliases else ""
                    typer.echo(f"{m.name}\tcontext={m.context_size}{mark}{aliases}")
            except grpc.aio.AioRpcError as exc:
                _fail(exc)

    asyncio.run(run())


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
