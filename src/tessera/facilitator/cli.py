"""`tessera facilitator run`: serve x402 /verify, /settle and /supported for one network.

Registered by tessera.cli through `register_facilitator(app)` (docs/agents.md)."""

from __future__ import annotations

import stat
from pathlib import Path

import typer
from eth_account.signers.local import LocalAccount
from rich.console import Console
from web3 import Web3

from tessera.chain.accounts import resolve_account
from tessera.chain.client import Chain
from tessera.chain.network import load_network
from tessera.command_errors import run_guarded
from tessera.errors import AccountError

facilitator_app = typer.Typer(help="An x402 facilitator for your own chain: verify and settle "
                              "payments, paying gas from its own key.", no_args_is_help=True)
console = Console()



def key_from_file(path: Path) -> LocalAccount:
    """A hex private key (with or without 0x) alone in a file; a file others may read is
    refused, as ssh refuses such a key."""
    try:
        mode = path.stat().st_mode
        text = path.read_text().strip()
    except OSError as exc:
        raise AccountError(f"cannot read key file {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise AccountError(f"key file {path} can be read by other users: chmod 600 {path}")
    key = text if text.startswith("0x") else "0x" + text
    if len(key) != 66:
        raise AccountError(f"key file {path} must hold one 32-byte hex private key")
    return resolve_account(key)


def facilitator_account(key: str | None, key_file: Path | None) -> LocalAccount:
    if (key is None) == (key_file is None):
        raise AccountError("give the facilitator's key with exactly one of --key (devnet:N, "
                           "keystore:NAME or 0x...) or --key-file PATH")
    return key_from_file(key_file) if key_file is not None else resolve_account(key)


@facilitator_app.command("run")
def run(
    network: Path = typer.Option(None, "--network", help="network file (default: the devnet's)"),
    key: str = typer.Option(None, "--key", help="the account that pays gas for settlements: "
                            "devnet:N, keystore:NAME (TESSERA_PASSWORD) or a 0x key"),
    key_file: Path = typer.Option(None, "--key-file", help="a file holding that account's hex "
                                  "private key (mode 600)"),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(4022, "--port", min=1, max=65535),
    pay_to: list[str] = typer.Option([], "--pay-to", help="also settle to this payee (repeat "
                                     "it); by default only to providers registered on the "
                                     "network, so nobody spends this key's gas on payments "
                                     "between addresses of their own"),
) -> None:
    """Serve /verify, /settle and /supported for the network's chain and its PaymentToken."""
    import tessera.chain.x402_budget  # noqa: F401  (registers "tessera-budget" beside "exact")
    from tessera.chain.x402_facilitator import (
        TesseraFacilitator,
        X402Network,
        registered_or_listed,
    )
    from tessera.facilitator.service import run_facilitator

    def build():
        account = facilitator_account(key, key_file)
        for address in pay_to:
            if not Web3.is_address(address):
                raise ValueError(f"--pay-to {address!r} is not an address")
        chain = Chain(load_network(network))
        net = X402Network.read(chain)
        return TesseraFacilitator(net, "0x" + bytes(account.key).hex(),
                                  payees=registered_or_listed(chain, tuple(pay_to)))

    facilitator = run_guarded(build)
    net = facilitator.net
    payees = "registered providers" + (f" and {', '.join(pay_to)}" if pay_to else "")
    console.print(f"facilitator for {net.caip2} at http://{host}:{port}: settles to {payees}; schemes "
                  f"{', '.join(facilitator.schemes)}; asset {net.token.address} "
                  f"({net.token.name!r} v{net.token.version}); gas paid by {facilitator.address}")
    run_facilitator(facilitator, host, port)


def register_facilitator(app: typer.Typer) -> None:
    """Add `tessera facilitator` to the main `tessera` app."""
    app.add_typer(facilitator_app, name="facilitator")
