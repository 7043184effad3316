"""How every `tessera` command meets a mistake it expects: one readable line on stderr and exit
code 1, never a traceback. The expected failures are the errors of tessera.errors that name
something the user can fix (a bad file, key, network, spec or amount; an unreachable or refusing
chain; a daemon that did not come up; a refused or failed payment or bridge step) and ValueError."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

from tessera.errors import (
    AccountError,
    BridgeError,
    ChainError,
    DaemonError,
    DevnetError,
    NetworkError,
    PaymentError,
    PaymentRefused,
    SpecError,
    TenantError,
)

USER_ERRORS = (ChainError, NetworkError, SpecError, AccountError, DevnetError, DaemonError,
               TenantError, PaymentError, PaymentRefused, BridgeError, ValueError)
err = Console(stderr=True)


def fail(message: str, code: int = 1) -> None:
    """Print `message` as an error and leave with `code`."""
    # escaped: a message may quote input ('[/x]' in a spec's key is not rich markup); one line,
    # never wrapped by rich (a terminal wraps it; a log or a grep gets paths whole)
    err.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def run_guarded(action):
    """Run a command body, turning expected failures into one readable line and exit code 1."""
    try:
        return action()
    except USER_ERRORS as exc:
        fail(str(exc))
