"""The demo's agent act: an AI agent with an on-chain budget buys inference from the model the
demo trained, and is refused once over its cap with nothing moved.

Real parts: the winning provider serves the demo's model as a separate process (`tessera
provider serve-model`, paid to the provider's devnet key; settlements are sent from another
devnet key, the idle deployer's, so that they never race the provider daemon for a nonce); the
demo's tenant, as the agent's owner, deposits TUSD into AgentBudget and grants a fresh session
key a budget per day and a cap per payment, payable to that provider only; the agent, holding
only the session key, pays each request with the "tessera-budget" x402 scheme through the
official SDK client (agent/buyer.py), and each payment settles on chain as `AgentBudget.pay`.
Its last request asks for so many tokens that the price is over the cap: the client refuses it
before the session key signs anything, and every balance is read before and after to show that
nothing moved.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
from eth_account import Account
from rich.console import Console
from rich.table import Table

from tessera.agent.buyer import InferenceBuyer, Purchase, Refusal
from tessera.chain.accounts import DEVNET_ACCOUNT_COUNT, devnet_account
from tessera.chain.agent_budget import AgentBudget
from tessera.chain.client import Chain, tx_hash
from tessera.chain.devnet import DEPLOYER, free_port
from tessera.chain.tokens import PaymentToken
from tessera.daemons import Daemons, raise_if_exited, stop
from tessera.errors import DaemonError, TenantError
from tessera.protocol.money import PAYMENT_DECIMALS, format_amount
from tessera.tenant.bidding import money

PER_REQUEST, PER_TOKEN = 1_000, 10            # TUSD base units: 0.001 + 0.00001 per token
DEPOSIT, BUDGET, CAP = 100_000, 50_000, 5_000  # 0.10 deposited; 0.05 a day; 0.005 a payment
DAY, GRANT_LIFETIME_S = 86_400, 3_600
COMPLETIONS = (("def ", 32), ("import ", 32), ("class ", 32))
TEMPERATURE = 0.8                             # sampled (seeded): a young model's greedy text is blank
OVER_CAP_TOKENS = 1024                        # 0.001 + 1024 x 0.00001 = 0.01124 TUSD > the cap
SERVER_START_S = 90.0


def _tusd(amount: int) -> str:
    """Base units as serve-model's options take them: TUSD, exact ('0.001')."""
    return format_amount(amount, PAYMENT_DECIMALS).replace(",", "")


def devnet_index(address: str) -> int:
    for index in range(DEVNET_ACCOUNT_COUNT):
        if devnet_account(index).address.lower() == address.lower():
            return index
    raise TenantError(f"provider {address} is not one of the devnet's accounts")


def served_model(job: dict) -> tuple[Path, str]:
    """(the model the demo's job trained, a provider that trained it): the single-node lease's
    results folder and its winner, or a DiLoCo job's model and its first finished worker."""
    if "results_dir" in job:
        return Path(job["results_dir"]), job["winner"]["provider"]
    worker = next(w for w in job["workers"] if w["finished"])
    return Path(job["model"]), worker["provider"]


def start_model_server(home: Path, model: Path, provider: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    command = [sys.executable, "-m", "tessera.cli", "provider", "serve-model",
               "--model", str(model), "--account", f"devnet:{devnet_index(provider)}",
               "--gas-account", f"devnet:{DEPLOYER}",
               "--network", str(home / "devnet" / "network.json"), "--port", str(port),
               "--per-request", _tusd(PER_REQUEST), "--per-token", _tusd(PER_TOKEN)]
    proc = subprocess.Popen(command, stdout=open(home / "model-server.log", "wb"),
                            stderr=subprocess.STDOUT, env={**os.environ, "TESSERA_HOME": str(home)})
    return proc, f"http://127.0.0.1:{port}"


def wait_serving(name: str, proc: subprocess.Popen, url: str) -> dict:
    deadline = time.monotonic() + SERVER_START_S
    while True:
        raise_if_exited({name: (proc, url)})
        try:
            response = httpx.get(f"{url}/v1/model", timeout=1)
            if response.status_code == 200:
                return response.json()
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise DaemonError(f"{name} did not serve {url}/v1/model in {SERVER_START_S:.0f} s")
        time.sleep(0.2)


def balances(budget: AgentBudget, owner: str, provider: str, grant_id: int) -> dict:
    token = PaymentToken(budget.chain)
    return {"owner_deposit": budget.balance_of(owner),
            "provider_tusd": token.balance_of(provider),
            "budget_contract_tusd": token.balance_of(budget.address),
            "spent_in_period": budget.spent_in_period(grant_id)}


def run_agent_act(console: Console, chain: Chain, home: Path, procs: Daemons, job: dict) -> dict:
    """Run the act on the demo's chain; `chain` is the tenant's (the agent's owner), `job` the
    demo job's summary. `procs` gains the model server while it runs (the caller's cleanup
    stops it if the act fails). Returns what happened, every transaction included."""
    started = time.monotonic()
    model, provider = served_model(job)
    console.rule("[bold]an agent buys inference")
    console.print(f"provider {provider} serves the model it trained ({model}) for "
                  f"{money(PER_REQUEST)} + {money(PER_TOKEN)} per token, paid over x402; an "
                  "agent pays from a budget its owner set on chain ...")
    name = "model-server"
    proc, url = start_model_server(home, model, provider)
    procs[name] = (proc, url)
    try:
        owner = AgentBudget(chain)
        session = Account.create()   # the agent's session key: no ETH, no TUSD
        deposit_txs = [tx_hash(r) for r in owner.deposit(DEPOSIT)]
        start = chain.block_timestamp()
        grant_id, receipt = owner.grant(session.address, BUDGET, DAY, CAP, start,
                                        start + GRANT_LIFETIME_S, [provider])
        console.print(f"the owner {chain.address} deposits {money(DEPOSIT)} (tx "
                      f"{deposit_txs[-1]}) and grants session key {session.address} "
                      f"{money(BUDGET)} a day, at most {money(CAP)} a payment, payable to the "
                      f"provider only: grant {grant_id} (tx {tx_hash(receipt)})", highlight=False)
        terms = wait_serving(name, proc, url)
        buyer = InferenceBuyer(chain.network, session, grant_id, url)
        payments = []
        for seed, (prompt, max_tokens) in enumerate(COMPLETIONS):
            bought = buyer.buy(prompt, max_tokens, TEMPERATURE, seed)
            if not isinstance(bought, Purchase):
                raise TenantError(f"the agent's request was refused: {bought.reason}")
            payments.append({"tx": bought.tx, "amount": bought.amount, "tokens": bought.tokens,
                             "prompt": prompt, "text": bought.text})
            console.print(f"  paid {money(bought.amount)} for {bought.tokens} tokens after "
                          f"{prompt!r} (tx {bought.tx}): {bought.text[:48]!r}…",
                          highlight=False, markup=False)
        before = balances(owner, chain.address, provider, grant_id)
        refused = buyer.buy(COMPLETIONS[0][0], OVER_CAP_TOKENS)
        after = balances(owner, chain.address, provider, grant_id)
        if not isinstance(refused, Refusal):
            raise TenantError(f"a request over the cap was paid (tx {refused.tx})")
        refusal = {**refused.to_dict(), "balances_before": before, "balances_after": after,
                   "nothing_moved": before == after}
        console.print(f"  a {OVER_CAP_TOKENS}-token request ({money(refused.price or 0)}) is over "
                      f"the {money(CAP)} cap: refused before signing ({refused.signatures} "
                      f"signatures); balances {'unchanged' if before == after else 'CHANGED'}",
                      highlight=False)
        available = owner.available(grant_id)
    finally:
        stop(proc)
    act = {"grant_id": grant_id, "owner": chain.address, "session_key": session.address,
           "provider": provider, "server": url, "model_sha256": terms["model"]["model_sha256"],
           "prices": {"per_request": PER_REQUEST, "per_token": PER_TOKEN},
           "deposit": DEPOSIT, "budget": BUDGET, "period": DAY, "cap": CAP,
           "transactions": {"deposit": deposit_txs, "grant": tx_hash(receipt)},
           "payments": payments, "spent": sum(p["amount"] for p in payments),
           "refusal": refusal, "available_after": available,
           "seconds": round(time.monotonic() - started, 1)}
    print_act(console, act)
    return act


def print_act(console: Console, act: dict) -> None:
    table = Table(title=f"agent payments (grant {act['grant_id']}, tessera-budget)")
    for column in ("prompt", "tokens", "paid", "transaction"):
        table.add_column(column, overflow="fold")
    for p in act["payments"]:
        table.add_row(repr(p["prompt"]), str(p["tokens"]), money(p["amount"]), p["tx"])
    r = act["refusal"]
    table.add_row(repr(r["prompt"]), str(r["max_tokens"]), f"refused: {r['limit']}",
                  "none (nothing signed)")
    console.print(table)
    console.print(f"agent spent {money(act['spent'])} of its {money(act['budget'])} daily budget "
                  f"({act['seconds']} s for the act)")
