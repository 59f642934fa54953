"""The one error style of posetalk-data's commands: one line naming the problem, a dim hint with the next step."""
from __future__ import annotations

import gc
from typing import Callable

import typer
from rich.console import Console

console = Console(stderr=True)


def fail(message: str, hint: str = "") -> None:
    # soft wrap: a path in the message stays whole, so it can be copied from the terminal
    console.print(f"[bold red]error:[/] {message}" + (f"\n[dim]{hint}[/]" if hint else ""), soft_wrap=True)
    raise typer.Exit(2)


def storage_errors() -> tuple[type[BaseException], ...]:
    """What a store can answer (unreachable, refused, no credentials): reported in one line, not a traceback."""
    errors: tuple[type[BaseException], ...] = (OSError,)
    try:
        from botocore.exceptions import BotoCoreError, ClientError
        errors += (BotoCoreError, ClientError)
    except ImportError:
        pass
    return errors


def fail_unreachable(where, err: BaseException) -> None:
    """A store that answered with an error (unreachable, refused, no credentials): one line and where to look."""
    fail(f"cannot reach {where}: {type(err).__name__}: {err}",
         "Check the URL, the credentials (AWS_* variables, ~/.aws) and the endpoint (AWS_ENDPOINT_URL).")


def run_command(app: Callable[[], None]) -> None:
    """A console command's entry point: the typer app, then the collector frozen before the interpreter exits.
    Its final sweeps would otherwise examine every object of the 2,000-odd modules a build imports (0.3-0.6 s of
    each command's exit here); atexit handlers still run and the process frees its memory on exit as always."""
    try:
        app()
    finally:
        gc.freeze()
