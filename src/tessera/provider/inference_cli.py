"""`tessera provider serve-model`: serve a model trained on Tessera for text generation, paid per
request over x402 (provider/inference.py, docs/agents.md). The model is a results folder
(`--model`) or the result of a lease the provider ran, from its own state dir (`--lease N
--state-dir DIR`, checked against the result committed on chain).

Registered by tessera.cli through `register_serve_model(provider_app)`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from tessera.chain.accounts import resolve_account
from tessera.chain.client import Chain
from tessera.chain.network import load_network
from tessera.command_errors import err, run_guarded
from tessera.http_limits import GRACEFUL_SHUTDOWN_S
from tessera.protocol.money import PAYMENT_DECIMALS, PAYMENT_SYMBOL, format_amount, parse_payment

console = Console()



def serve_model(
    model: Path = typer.Option(None, "--model", help="a finished job's results folder (as `tessera "
                               "job results --out` wrote it) or its model.pt"),
    lease: int = typer.Option(None, "--lease", min=1, help="instead of --model: serve the result "
                              "of this finished lease from the provider's own --state-dir, after "
                              "checking that --account ran it and that its artifacts hash to the "
                              "result committed on chain"),
    state_dir: Path = typer.Option(None, "--state-dir", help="with --lease: the provider daemon's "
                                   "state_dir (its provider.toml's [provider] state_dir)"),
    account: str = typer.Option(..., "--account", help="the provider, paid for every request: "
                                "devnet:N, keystore:NAME or a 0x key"),
    network: Path = typer.Option(None, "--network", help="network file (default: the devnet's)"),
    per_request: str = typer.Option("0.001", "--per-request", help=f"{PAYMENT_SYMBOL} per request"),
    per_token: str = typer.Option("0.00001", "--per-token",
                                  help=f"{PAYMENT_SYMBOL} per generated token (byte)"),
    facilitator: str = typer.Option(None, "--facilitator", help="URL of a `tessera facilitator "
                                    "run` to verify and settle with; default: in-process"),
    gas_account: str = typer.Option(None, "--gas-account", help="in-process: the account that "
                                    "sends settlements and pays their gas (default: --account; "
                                    "give another key if the provider daemon runs too, so the "
                                    "two never race for a nonce)"),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8402, "--port", min=1, max=65535),
    threads: int = typer.Option(1, "--threads", min=1, max=256, help="torch threads"),
) -> None:
    """Serve POST /v1/generate behind an x402 paywall (and a free GET /v1/model)."""
    import uvicorn

    import tessera.chain.x402_budget  # noqa: F401  (registers "tessera-budget" beside "exact")
    from tessera.chain.registry import ProviderRegistry
    from tessera.chain.x402_facilitator import LocalFacilitatorClient, TesseraFacilitator, X402Network
    from tessera.compute.generate import load_model
    from tessera.provider.inference import InferencePrices, create_inference_app

    def build():
        provider = resolve_account(account)
        prices = InferencePrices(parse_payment(per_request, "--per-request"),
                                 parse_payment(per_token, "--per-token"))
        if (model is None) == (lease is None):
            raise ValueError("give exactly one of --model PATH or --lease N (with --state-dir)")
        if lease is not None and state_dir is None:
            raise ValueError("--lease needs --state-dir, the provider daemon's state folder")
        # a --model is checked before connecting to anything; a --lease needs the chain
        text_model = load_model(model, threads=threads) if model is not None else None
        net = X402Network.read(Chain(load_network(network)))
        if text_model is None:
            text_model = load_model(lease_result(net.chain, lease, state_dir, provider.address),
                                    threads=threads)
        if facilitator:
            from x402.http import FacilitatorConfig, HTTPFacilitatorClient

            client, settles = HTTPFacilitatorClient(FacilitatorConfig(url=facilitator)), facilitator
        else:
            payer = resolve_account(gas_account) if gas_account else provider
            local = TesseraFacilitator(net, "0x" + bytes(payer.key).hex())
            client, settles = LocalFacilitatorClient(local), f"in-process, gas from {local.address}"
        registered = ProviderRegistry(net.chain).provider_offer(provider.address) is not None
        app = create_inference_app(text_model, net, provider.address, prices, client)
        return app, text_model, net, provider.address, prices, settles, registered

    app, text_model, net, pay_to, prices, settles, registered = run_guarded(build)
    console.print(f"model {text_model.sha256[:16]} ({text_model.parameters} parameters) at "
                  f"http://{host}:{port}/v1/generate on {net.caip2}")
    console.print(f"price: {format_amount(prices.per_request, PAYMENT_DECIMALS, PAYMENT_SYMBOL)} "
                  f"+ {format_amount(prices.per_token, PAYMENT_DECIMALS, PAYMENT_SYMBOL)} per "
                  f"token, paid to {pay_to}; settled {settles}")
    if not registered:
        err.print(f"[yellow]note:[/] {pay_to} is not a registered provider on {net.caip2}: "
                  "agents paying only registered providers (tessera-budget, any_provider) "
                  "will not pay it")
    uvicorn.run(app, host=host, port=port, log_level="info",
                timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)


def lease_result(chain: Chain, lease_id: int, state_dir: Path, provider: str) -> Path:
    """The results folder of finished lease `lease_id` in a provider's state dir (its job
    folder, `leases/<id>/`, provider/runner.JobSupervisor), checked before anything is served:
    the lease was run by `provider`, it has a committed result, and the folder's artifacts
    (checked each against its sha256) hash to that result. ValueError naming what is wrong."""
    from tessera.chain.market import Market
    from tessera.compute.train import verify_artifacts

    record = Market(chain).lease(lease_id)   # ChainError when it does not exist
    if record.provider.lower() != provider.lower():
        raise ValueError(f"--lease: lease {lease_id} was run by {record.provider}, not by "
                         f"--account {provider}")
    committed = bytes(record.result_hash).hex()
    if int(committed or "0", 16) == 0:
        raise ValueError(f"--lease: lease {lease_id} has no result committed on chain yet")
    folder = Path(state_dir) / "leases" / str(lease_id)
    if not (folder / "artifacts.json").is_file():
        raise ValueError(f"--lease: no finished job of lease {lease_id} in {folder} (is "
                         "--state-dir the provider daemon's state_dir?)")
    found = verify_artifacts(folder)
    if found.removeprefix("0x") != committed:
        raise ValueError(f"--lease: the artifacts in {folder} hash to {found}, but lease "
                         f"{lease_id} committed 0x{committed} on chain")
    return folder


def register_serve_model(provider_app: typer.Typer) -> None:
    """Add `tessera provider serve-model` to the `tessera provider` group."""
    provider_app.command("serve-model")(serve_model)
