"""Options shared by the `headrace` commands."""

from __future__ import annotations

from typing import Annotated

import typer

TargetOption = Annotated[
    str, typer.Option("--target", envvar="HEADRACE_TARGET", help="Envoy's public address.")
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token",
        envvar="HEADRACE_TOKEN",
        help="Bearer token; default: one minted from the local keys under HEADRACE_HOME.",
    ),
]
