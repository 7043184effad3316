"""Validator commands: `tessera validator register` and `tessera validator run`.

Registered by tessera.cli through `register_validator(app)` (docs/validators.md)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from tessera.chain.accounts import resolve_account
from tessera.chain.client import Chain
from tessera.chain.network import load_network
from tessera.chain.validators import Validators
from tessera.command_errors import run_guarded
from tessera.protocol.money import STAKE_DECIMALS, STAKE_SYMBOL, format_amount, parse_amount

validator_app = typer.Typer(help="Stake as a validator and probe providers' liveness.",
                            no_args_is_help=True)
console = Console()



@validator_app.command("register")
def register(
    account: str = typer.Option(..., "--account", help="devnet:N, keystore:NAME or a 0x key"),
    stake: str = typer.Option("100", "--stake", help=f"{STAKE_SYMBOL} to stake"),
    endpoint: str = typer.Option(None, "--endpoint", help="public URL serving your receipts"),
    network: Path = typer.Option(None, "--network", help="network file (default: the devnet's)"),
) -> None:
    """Stake and become a validator (or top up the stake and set the endpoint)."""
    from tessera.validator.stake import ensure_validator

    def body():
        chain = Chain(load_network(network),
                      resolve_account(account))
        chain.check_connected()
        sent = ensure_validator(chain, parse_amount(stake, STAKE_DECIMALS), endpoint)
        total = Validators(chain).stake_of(chain.address)
        return chain.address, sent, total

    address, sent, total = run_guarded(body)
    for what, tx in sent:
        console.print(f"{what}: {tx}")
    console.print(f"validator {address}: {format_amount(total, STAKE_DECIMALS, STAKE_SYMBOL)} staked"
                  + ("" if sent else " (nothing to do)"))


@validator_app.command("run")
def run(config: Path = typer.Option(..., "--config", help="validator.toml")) -> None:
    """Stake if needed, then probe every active provider each epoch and post one report per epoch."""
    from tessera.validator.config import load_validator_config
    from tessera.validator.service import run_validator

    cfg = run_guarded(lambda: load_validator_config(config))
    run_guarded(lambda: run_validator(cfg))


def register_validator(app: typer.Typer) -> None:
    """Add the validator's commands to the main `tessera` app."""
    app.add_typer(validator_app, name="validator")
