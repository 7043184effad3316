"""`tessera`: thin commands over the chain, provider, tenant and demo modules."""

from __future__ import annotations

import getpass
import json
import sys
from pathlib import Path

import typer
from rich.console import Console

from tessera.chain.accounts import (
    devnet_account,
    keystore_address,
    list_keystores,
    resolve_account,
    save_keystore,
)
from tessera.chain.client import Chain
from tessera.chain.devnet import Devnet
from tessera.chain.network import load_network
from tessera.chain.tokens import PaymentToken, StakeToken
from tessera.command_errors import err, fail, run_guarded
from tessera.compute import numerics
from tessera.protocol.jobspec import DEFAULT_WARN_WITHIN
from tessera.protocol.money import (
    PAYMENT_DECIMALS,
    PAYMENT_SYMBOL,
    STAKE_DECIMALS,
    STAKE_SYMBOL,
    format_duration,
    show_amount,
)

app = typer.Typer(help="Tessera: rent GPUs through on-chain contracts.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
devnet_app = typer.Typer(help="A local chain (anvil) with Tessera's contracts deployed.",
                         no_args_is_help=True)
wallet_app = typer.Typer(help="Encrypted keystores and devnet test accounts.", no_args_is_help=True)
provider_app = typer.Typer(help="Run a provider node.", no_args_is_help=True)
job_app = typer.Typer(help="Submit and manage jobs as a tenant.", no_args_is_help=True)
network_app = typer.Typer(help="Tessera's contracts on any EVM chain (a public test network).",
                          no_args_is_help=True)
app.add_typer(devnet_app, name="devnet")
app.add_typer(wallet_app, name="wallet")
app.add_typer(provider_app, name="provider")
app.add_typer(job_app, name="job")
app.add_typer(network_app, name="network")


@app.callback()
def _start() -> None:
    """Runs before every command, so before the process's first torch op: a verified job's
    training and replays use one numerics profile whatever this CPU would pick."""
    numerics.pin()

console = Console()

NetworkOption = typer.Option(None, "--network", help="network file (default: the devnet's)")
# a lease id is a uint256 above zero: anything else is refused before any connection
LeaseArgument = typer.Argument(..., min=1, max=2**256 - 1, help="the lease id")
AccountOption = typer.Option("devnet:5", "--account",
                             help="devnet:N (anvil's public test keys), keystore:NAME, or 0x key")


def connect(network: Path | None, account: str | None) -> Chain:
    net = load_network(network)
    chain = Chain(net, resolve_account(account) if account else None)
    chain.check_connected()
    return chain


# -- devnet -------------------------------------------------------------------------------
@devnet_app.command("up")
def devnet_up(port: int = typer.Option(8545, help="RPC port on 127.0.0.1"),
              block_time: int = typer.Option(
                  1, "--block-time", min=0, max=3600,
                  help="also mine a block every N seconds (transactions still land at once), so "
                       "that chain time follows the clock while nothing is sent: an uptime epoch "
                       "without a block cannot hold a heartbeat, and the epochs of a quiet job "
                       "would be claimed against its honest provider; 0: a block per "
                       "transaction only"),
              chains: int = typer.Option(1, "--chains", min=1, max=2,
                                         help="2: also a second anvil (chain 31338, on --port + 1) "
                                              "and the bridge between them")) -> None:
    """Start anvil, deploy the contracts, fund the test accounts, write the network file."""
    devnet = Devnet.default()
    network = run_guarded(lambda: devnet.up(port=port, block_time=block_time or None,
                                            chains=chains))
    if block_time:
        console.print(f"mining a block every {block_time} s, and one per transaction")
    for net in network.chains():
        console.print(f"devnet up: chain {net.chain_id} at {net.rpc_url}")
        for name, address in net.contracts.items():
            console.print(f"  {name:<17} {address}")
    console.print(f"network file: {devnet.network_file}")


@devnet_app.command("down")
def devnet_down() -> None:
    """Stop the devnet's anvil."""
    stopped = Devnet.default().down()
    console.print("devnet stopped" if stopped else "no devnet was running")


@devnet_app.command("status")
def devnet_status() -> None:
    """Is the devnet running, and where are its contracts?"""
    devnet = Devnet.default()
    pid = devnet.pid()
    if pid is None:
        console.print("devnet: not running")
        raise typer.Exit(1)
    home = run_guarded(lambda: connect(devnet.network_file, None)).network
    for net, net_pid in zip(home.chains(), (pid, devnet.peer_pid()), strict=False):
        if net_pid is None:
            console.print(f"devnet: chain {net.chain_id} is not running ({net.rpc_url})")
            continue
        chain = run_guarded(lambda net=net: Chain(net))
        console.print(f"devnet: running (pid {net_pid}), chain {net.chain_id}, "
                      f"block {run_guarded(chain.block_number)}, {net.rpc_url}")
        for name, address in net.contracts.items():
            console.print(f"  {name:<17} {address}")


# -- wallet -------------------------------------------------------------------------------
def _ask_password(confirm: bool) -> str:
    import os

    if "TESSERA_PASSWORD" in os.environ:
        return os.environ["TESSERA_PASSWORD"]
    password = getpass.getpass("password: ")
    if confirm and getpass.getpass("again: ") != password:
        fail("passwords differ")
    return password


@wallet_app.command("new")
def wallet_new(name: str) -> None:
    """Create a new key in an encrypted keystore."""
    from eth_account import Account

    account = Account.create()
    path = run_guarded(lambda: save_keystore(name, account.key, _ask_password(confirm=True)))
    console.print(f"wallet {name}: {account.address}\nkeystore: {path}")


@wallet_app.command("import")
def wallet_import(name: str) -> None:
    """Import a private key (read from standard input) into an encrypted keystore."""
    key = sys.stdin.readline().strip() if not sys.stdin.isatty() else getpass.getpass("key: ")
    account = run_guarded(lambda: resolve_account(key if key.startswith("0x") else "0x" + key))
    path = run_guarded(lambda: save_keystore(name, account.key, _ask_password(confirm=True)))
    console.print(f"wallet {name}: {account.address}\nkeystore: {path}")


def _address_of(spec: str) -> tuple[str, str]:
    if spec.startswith("devnet:"):
        account = resolve_account(spec)
        return account.address, "anvil's published test key: public, never hold real value"
    if spec.startswith("0x") and len(spec) == 42:
        return spec, "address"
    name = spec.removeprefix("keystore:")
    return keystore_address(name), f"keystore {name}"


@wallet_app.command("show")
def wallet_show(spec: str = typer.Argument(..., help="devnet:N, NAME or an address")) -> None:
    """Show an account's address and where its key comes from."""
    address, origin = run_guarded(lambda: _address_of(spec))
    console.print(f"{address}  ({origin})")


@wallet_app.command("list")
def wallet_list() -> None:
    """List keystores and the devnet test accounts."""
    for name in list_keystores():
        console.print(f"{name:<12} {keystore_address(name)}  keystore")
    for index in range(10):
        console.print(f"devnet:{index:<5} {devnet_account(index).address}  anvil test key (public)")


@wallet_app.command("balance")
def wallet_balance(spec: str = typer.Argument(..., help="devnet:N, NAME or an address"),
                   network: Path = NetworkOption) -> None:
    """An account's whole balances (gas coin, TUSD, TSTK): what it holds, not what it earned."""
    def body():
        address, _ = _address_of(spec)
        chain = connect(network, None)
        eth = chain.w3.eth.get_balance(address)
        pay = PaymentToken(chain).balance_of(address)
        stake = StakeToken(chain).balance_of(address)
        return address, eth, pay, stake
    address, eth, pay, stake = run_guarded(body)
    console.print(f"{address} holds (whole balances, not earnings):")
    console.print(f"  {show_amount(eth, 18, 'ETH')}")
    console.print(f"  {show_amount(pay, PAYMENT_DECIMALS, PAYMENT_SYMBOL)}")
    console.print(f"  {show_amount(stake, STAKE_DECIMALS, STAKE_SYMBOL)}")


# -- network ------------------------------------------------------------------------------
@network_app.command("deploy")
def network_deploy(
        rpc_url: str = typer.Option(..., "--rpc-url", help="the chain's JSON-RPC URL (http/https)"),
        account: str = typer.Option(..., "--account", help="the deployer: keystore:NAME (password "
                                    "from TESSERA_PASSWORD, else asked); devnet:N only on a devnet"),
        out: Path = typer.Option(..., "--out", help="the network file to write, e.g. testnet.json"),
        name: str = typer.Option(None, "--name", help="the network's name (default: --out's stem)"),
        epoch_seconds: int = typer.Option(3600, "--epoch-seconds", min=1, max=7 * 86_400,
                                          help="the uptime epoch; the claim window and unbonding "
                                               "period are raised to what it needs"),
        treasury: str = typer.Option(None, "--treasury",
                                     help="receives the market's fee (default: the deployer)"),
        block_gas_limit: int = typer.Option(None, "--block-gas-limit", help="the gas a block "
                                            "really carries (default: the latest block's limit)"),
        block_seconds: float = typer.Option(None, "--block-seconds", help="the chain's block "
                                            "time (default: measured over its last 64 blocks)"),
        yes: bool = typer.Option(False, "--yes", "-y", help="deploy without asking"),
        force: bool = typer.Option(False, "--force", help="replace --out when it describes an "
                                   "earlier deploy to the same chain")) -> None:
    """Deploy the contracts to a chain by its RPC URL and write the network file that every
    command takes with --network. Checks the RPC, the key and the deployer's gas first, shows
    the plan and asks before sending anything; funds and mints nothing for test accounts."""
    from tessera.chain.network_deploy import deploy_network

    network = run_guarded(lambda: deploy_network(
        rpc_url, account, out, name=name, epoch_seconds=epoch_seconds, treasury=treasury,
        block_gas_limit=block_gas_limit, block_seconds=block_seconds, force=force, yes=yes,
        say=lambda line: console.print(line, markup=False, highlight=False),
        confirm=lambda question: typer.confirm(question, default=False),
        ask_password=lambda: _ask_password(confirm=False)))
    if network is None:
        raise typer.Exit(1)


# -- provider -----------------------------------------------------------------------------
@provider_app.command("run")
def provider_run(config: Path = typer.Option(..., "--config", help="provider.toml")) -> None:
    """Register (staking if needed), then bid on orders and run leased work until stopped."""
    from tessera.provider.config import load_provider_config
    from tessera.provider.service import run_provider

    cfg = run_guarded(lambda: load_provider_config(config))
    run_guarded(lambda: run_provider(cfg))


# -- jobs ---------------------------------------------------------------------------------
@job_app.command("submit")
def job_submit(spec: Path = typer.Argument(..., help="job.toml"), network: Path = NetworkOption,
               account: str = AccountOption,
               follow: bool = typer.Option(True, help="follow progress, fetch and check results"),
               close: bool = typer.Option(True, help="close the lease once results are checked"),
               provider_grace: str = typer.Option(
                   "5m", "--provider-grace",
                   help="while following: how long the provider may stay unreachable (retried "
                        "with backoff) before the lease is closed and its epochs without a "
                        "heartbeat are claimed, e.g. 90s, 5m"),
               pay_from_chain: int | None = typer.Option(
                   None, "--pay-from-chain", min=1,
                   help="a peer chain id of the network: the deposit is sent from this "
                        "account's TUSD there and opens the order here in one bridge message; "
                        "the order's refunds go back there (a relayer must run)")):
    """Post an order with escrow, collect bids, lease the best one, run the job."""
    from tessera.tenant.flow import submit_job

    run_guarded(lambda: submit_job(spec, network, account, follow=follow, close=close,
                                   console=console, provider_grace=provider_grace,
                                   pay_from_chain=pay_from_chain))


@job_app.command("resume")
def job_resume(job_dir: Path = typer.Argument(..., help="the DiLoCo job's folder, as "
                                              "`job submit` printed it (holds job.json)"),
               network: Path = NetworkOption, account: str = AccountOption):
    """Continue a DiLoCo job whose tenant process stopped, from its last finished round."""
    from tessera.tenant.multinode import resume_job

    run_guarded(lambda: resume_job(job_dir, network, account, console))


WarnWithinOption = typer.Option(
    format_duration(DEFAULT_WARN_WITHIN), "--warn-within",
    help="warn about a lease whose escrow runs out within this, e.g. 30m, 2h (a job spec's "
         "\\[escrow] warn_within does the same while it is followed)")


@job_app.command("status")
def job_status(lease_id: int = LeaseArgument, network: Path = NetworkOption, account: str = AccountOption,
               warn_within: str = WarnWithinOption):
    """A lease on chain (state, time left, its whole money) and its job's progress (rounds for DiLoCo)."""
    from tessera.tenant.lease_views import show_status

    run_guarded(lambda: show_status(lease_id, network, account, console, warn_within))


@job_app.command("list")
def job_list(network: Path = NetworkOption, account: str = AccountOption,
             warn_within: str = WarnWithinOption,
             as_json: bool = typer.Option(False, "--json", help="as JSON (money in base units, "
                                          "named; times in Unix seconds)")):
    """Your leases as tenant, open ones first (soonest to run out first), with time left."""
    from tessera.tenant.lease_views import list_leases

    run_guarded(lambda: list_leases(network, account, console, warn_within, as_json))


@job_app.command("top-up")
def job_top_up(lease_id: int = LeaseArgument,
               amount: str = typer.Argument(..., help="TUSD to add, e.g. 0.50"),
               network: Path = NetworkOption, account: str = AccountOption,
               pay_from_chain: int | None = typer.Option(
                   None, "--pay-from-chain", min=1,
                   help="for a lease of an order funded from that peer chain: the top-up is "
                        "sent from this account's TUSD there in one bridge message (a relayer "
                        "must run); what is left of it comes back there with the order's refunds")):
    """Add TUSD to an open lease's escrow so that it runs longer (not after it has run out)."""
    from tessera.tenant.lease_views import top_up_lease

    run_guarded(lambda: top_up_lease(lease_id, amount, network, account, console,
                                     pay_from_chain=pay_from_chain))


@job_app.command("logs")
def job_logs(lease_id: int = LeaseArgument, network: Path = NetworkOption, account: str = AccountOption):
    """The job's progress lines."""
    from tessera.tenant.client import tenant_for

    tenant = run_guarded(lambda: tenant_for(network, account))
    for line in run_guarded(lambda: tenant.logs(lease_id)):
        console.print(json.dumps(line))


@job_app.command("results")
def job_results(lease_id: int = LeaseArgument, out: Path = typer.Option(None, help="download folder"),
                network: Path = NetworkOption, account: str = AccountOption):
    """Download the artifacts, check them by hash against the chain, recompute the loss."""
    from tessera.tenant.flow import fetch_and_check

    run_guarded(lambda: fetch_and_check(lease_id, out, network, account, console))


@job_app.command("close")
def job_close(lease_id: int = LeaseArgument, network: Path = NetworkOption, account: str = AccountOption):
    """Close the lease: pay the provider what it earned, refund the rest; show the lease's money."""
    from tessera.tenant.lease_views import close_lease

    run_guarded(lambda: close_lease(lease_id, network, account, console))


@job_app.command("claim")
def job_claim(lease_id: int = LeaseArgument, network: Path = NetworkOption, account: str = AccountOption):
    """Claim back the pay of the lease's final epochs in which its provider was not up."""
    from tessera.tenant.lease_views import claim_downtime

    run_guarded(lambda: claim_downtime(lease_id, network, account, console))


@job_app.command("release")
def job_release(lease_id: int = LeaseArgument, network: Path = NetworkOption, account: str = AccountOption):
    """A verified lease: release its pay for final rounds; proven rounds are refunded to you, and
    once a cheat is proven for the lease, every round still held."""
    from tessera.tenant.flow import release_pay

    run_guarded(lambda: release_pay(lease_id, network, account, console))


# -- demo ---------------------------------------------------------------------------------
@app.command("demo")
def demo(as_json: bool = typer.Option(False, "--json", help="print the summary as JSON (money "
                                      "in integer base units: its \"units\" entry says which)"),
         steps: int = typer.Option(None, help="training steps (default: the demo job's)"),
         nodes: int = typer.Option(1, min=1, max=3,
                                   help="train on this many providers with DiLoCo (1: one lease)"),
         cheater: bool = typer.Option(True, "--cheater/--no-cheater",
                                      help="end with a cheating provider caught and slashed"),
         chains: int = typer.Option(1, "--chains", help="2: the tenant's TUSD is on a second "
                                    "chain (31338) and crosses the bridge to pay for the lease "
                                    "(or, with --nodes, the DiLoCo job's leases)"),
         agent: bool = typer.Option(True, "--agent/--no-agent",
                                    help="show an agent buying inference from the trained model")):
    """A whole rental on a local chain: 3 providers bid, one trains a model, the lease settles.
    With --nodes 3, one model is trained across all three providers with DiLoCo. Then a
    cheating provider joins a verified job, is caught by a spot check, and three staked
    validators replay its work, vote and slash it (--no-cheater skips this act). An agent then
    buys inference from the trained model (--no-agent skips it). With
    --chains 2 the tenant's order (one lease, or the DiLoCo job's) is funded from a second
    chain and the unused part goes back there."""
    from tessera.demo import run_demo

    if chains not in (1, 2):
        fail(f"--chains must be 1 or 2 (a home chain and at most one peer chain), not {chains}")
    summary = run_guarded(lambda: run_demo(console=err if as_json else console, steps=steps,
                                           nodes=nodes, cheater=cheater, chains=chains,
                                           agent=agent))
    if as_json:
        print(json.dumps(summary, indent=2))


from tessera.explorer.cli import register as register_explorer  # noqa: E402

register_explorer(app)

from tessera.validator.cli import register_validator  # noqa: E402

register_validator(app)

from tessera.facilitator.cli import register_facilitator  # noqa: E402

register_facilitator(app)

from tessera.provider.inference_cli import register_serve_model  # noqa: E402

register_serve_model(provider_app)

from tessera.agent.cli import register_agent  # noqa: E402

register_agent(app)

from tessera.relayer.cli import register_bridge  # noqa: E402

register_bridge(app)

if __name__ == "__main__":
    app()
