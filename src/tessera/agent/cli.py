"""`tessera agent ...`: run an agent (`run`), and the owner's commands over its on-chain budget
(`grant`, `budget`, `pause`, `revoke`, `withdraw`). Registered by tessera.cli through
`register_agent(app)`; docs/agents.md, "An agent that rents training"."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from tessera.command_errors import err, run_guarded
from tessera.protocol.money import format_duration, parse_payment
from tessera.tenant.bidding import money

agent_app = typer.Typer(help="AI agents as customers: run one, and set the on-chain budget it "
                        "pays from.", no_args_is_help=True)
console = Console()

NetworkOption = typer.Option(None, "--network", help="network file (default: the devnet's)")
OwnerOption = typer.Option("devnet:5", "--account", help="the owner: devnet:N, keystore:NAME or "
                           "a 0x key")
JsonOption = typer.Option(False, "--json", help="as JSON (money in TUSD base units)")



def _owner_budget(network: Path | None, account: str | None):
    from tessera.chain.accounts import resolve_account
    from tessera.chain.agent_budget import AgentBudget
    from tessera.chain.client import Chain
    from tessera.chain.network import load_network

    chain = Chain(load_network(network), resolve_account(account) if account else None)
    chain.check_connected()
    return AgentBudget(chain)


@agent_app.command("run")
def run(config: Path = typer.Argument(..., help="the agent's TOML file (examples/agent.toml)"),
        as_json: bool = typer.Option(False, "--json", help="print how the run ended as JSON")):
    """Rent training paid from the agent's grant, check the result, buy completions from a
    provider serving it; stop when the goal is met or the budget is spent (exit 0 either way)."""
    from tessera.agent.config import load_agent_config
    from tessera.agent.loop import run_agent

    cfg = run_guarded(lambda: load_agent_config(config))
    out = err if as_json else console
    result = run_guarded(lambda: run_agent(cfg, out, config.resolve().parent))
    out.print(f"[bold]agent {cfg.agent.name} stopped[/]: {escape(result.reason)}; "
              f"{len(result.payments)} payment(s), {money(sum(p['amount'] for p in result.payments))}"
              f" in all; log {result.log}", highlight=False)
    if as_json:
        print(json.dumps(result.to_dict(), indent=2))


@agent_app.command("grant")
def grant(session_key: str = typer.Option(..., "--session-key", help="the agent's session key: "
                                          "its address, or devnet:N / keystore:NAME"),
          budget: str = typer.Option(..., "--budget", help="TUSD the key may spend per period"),
          cap: str = typer.Option(..., "--cap", help="TUSD at most per payment"),
          period: str = typer.Option("1d", "--period", help="the budget's period: 1h, 1d, ..."),
          expiry: str = typer.Option("30d", "--expiry", help="the grant ends this long from now"),
          payee: list[str] = typer.Option([], "--payee", help="an address the key may pay "
                                          "(repeat; an agent renting training lists its own "
                                          "wallet)"),
          any_provider: bool = typer.Option(False, "--any-provider", help="also any registered "
                                            "provider"),
          deposit: str = typer.Option(None, "--deposit", help="TUSD to deposit first"),
          network: Path = NetworkOption, account: str = OwnerOption, as_json: bool = JsonOption):
    """Deposit (optionally) and grant a session key a budget per period, a cap per payment,
    payees and an expiry; prints the grant id."""
    from tessera.agent import owner

    def body():
        terms = owner.GrantTerms.parse(session_key, budget, period, cap, expiry, payee,
                                       any_provider, deposit)
        return owner.grant(_owner_budget(network, account), terms)
    done = run_guarded(body)
    if as_json:
        print(json.dumps(done, indent=2))
        return
    for tx in done["transactions"].get("deposit", []):
        console.print(f"deposit tx {tx}")
    console.print(f"grant {done['grant_id']}: key {done['key']} may pay {money(done['budget'])} "
                  f"per {format_duration(done['period'])}, at most {money(done['cap'])} a "
                  f"payment, to {', '.join(done['payees']) or 'nobody listed'}"
                  f"{' and any registered provider' if done['any_provider'] else ''}; "
                  f"owner deposit {money(done['owner_balance'])} (tx {done['transactions']['grant']})",
                  highlight=False)
    console.print(f"grant id: {done['grant_id']}")


@agent_app.command("budget")
def show_budget(grant_id: int = typer.Argument(..., min=1), network: Path = NetworkOption,
                as_json: bool = JsonOption):
    """A grant: its terms and state, spent this period, payable now, the owner's deposit."""
    from tessera.agent import owner

    g = run_guarded(lambda: owner.describe(_owner_budget(network, None), grant_id))
    if as_json:
        print(json.dumps(g, indent=2))
        return
    console.print(f"grant {grant_id} ({g['state']}): owner {g['owner']}, key {g['key']}",
                  highlight=False)
    console.print(f"  budget {money(g['budget'])} per {format_duration(g['period'])}, cap "
                  f"{money(g['cap'])} a payment; spent this period {money(g['spent_in_period'])}"
                  f"; payable now {money(g['available'])}", highlight=False)
    console.print(f"  payees: {', '.join(g['payees']) or 'none listed'}"
                  f"{'; any registered provider' if g['any_provider'] else ''}", highlight=False)
    console.print(f"  owner's deposit {money(g['owner_balance'])}; expires at {g['expiry']} "
                  f"(chain time now {g['chain_time']})", highlight=False)


@agent_app.command("pause")
def pause(grant_id: int = typer.Argument(..., min=1),
          resume: bool = typer.Option(False, "--resume", help="unpause instead"),
          network: Path = NetworkOption, account: str = OwnerOption):
    """Pause a grant (its key can pay nothing until resumed), or resume it."""
    from tessera.agent import owner
    from tessera.chain.client import tx_hash

    def body():
        budget = _owner_budget(network, account)
        owner.check_owner(budget, grant_id)
        return tx_hash(budget.set_paused(grant_id, not resume))
    tx = run_guarded(body)
    console.print(f"grant {grant_id} {'resumed' if resume else 'paused'} (tx {tx})")


@agent_app.command("revoke")
def revoke(grant_id: int = typer.Argument(..., min=1), network: Path = NetworkOption,
           account: str = OwnerOption):
    """Revoke a grant for good."""
    from tessera.agent import owner
    from tessera.chain.client import tx_hash

    def body():
        budget = _owner_budget(network, account)
        owner.check_owner(budget, grant_id)
        return tx_hash(budget.revoke(grant_id))
    tx = run_guarded(body)
    console.print(f"grant {grant_id} revoked (tx {tx})")


@agent_app.command("withdraw")
def withdraw(amount: str = typer.Argument(..., help="TUSD to take back, e.g. 1.50"),
             network: Path = NetworkOption, account: str = OwnerOption):
    """Take back unspent deposit (any time; grants can then pay only from what is left)."""
    from tessera.chain.client import tx_hash

    def body():
        budget = _owner_budget(network, account)
        receipt = budget.withdraw(parse_payment(amount, "amount"))
        return tx_hash(receipt), budget.balance_of(budget.chain.address)
    tx, left = run_guarded(body)
    console.print(f"withdrew {amount} TUSD (tx {tx}); deposit left {money(left)}")


def register_agent(app: typer.Typer) -> None:
    """Add `tessera agent ...` to the main app."""
    app.add_typer(agent_app, name="agent")
