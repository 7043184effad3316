"""`tessera agent run` end to end: an agent with only a session key and a wallet holding gas
money takes its training escrow from its owner's AgentBudget grant, rents training from a real
provider process, checks the result, buys completions from the provider serving that result
(`tessera provider serve-model --lease N`), and stops: once when its goal is met, once when the
grant refuses before signing. Every payment is checked against the AgentPaid events on chain and
the owner's deposit. Plus the agent file's errors, which need no chain."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tomli_w
from eth_account import Account
from tests.support.jobs import SMALL_JOB
from tests.support.processes import wait_until

from tessera.agent.config import parse_agent_config
from tessera.chain.agent_budget import AgentBudget
from tessera.chain.client import Chain
from tessera.chain.devnet import free_port
from tessera.chain.tokens import PaymentToken
from tessera.daemons import stop
from tessera.errors import SpecError
from tessera.protocol.jobspec import JobSpec
from tessera.protocol.money import PAYMENT_DECIMALS, format_amount

OWNER, SERVER_GAS, PROVIDER_INDEX = 8, 7, 2   # devnet keys (the `provider` fixture is devnet:2)
PER_REQUEST, PER_TOKEN, MAX_TOKENS = 1_000, 10, 16
PRICE = PER_REQUEST + PER_TOKEN * MAX_TOKENS       # what one completion costs, base units
MAX_VAL_LOSS = 5.0   # ln(256) = 5.55 before training; 30 steps bring it well below


def tessera(home: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tessera.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, "TESSERA_HOME": str(home)})


def tusd(amount: int) -> str:
    return format_amount(amount, PAYMENT_DECIMALS).replace(",", "")


def records(log: Path) -> list[dict]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def agent_file(path: Path, *, session: str, grant: int, url: str, log: Path, completions: int,
               wallet: str | None = None, job: dict | None = None,
               model_sha256: str | None = None) -> Path:
    config = {"agent": {"name": path.stem, "session_key": session, "grant": grant,
                        "log": str(log)},
              "goal": {"completions": completions},
              "inference": {"url": url, "prompts": ["def ", "import "], "max_tokens": MAX_TOKENS,
                            "wait": "3m"}}
    if job is not None:
        config["agent"]["wallet"] = wallet
        config["goal"]["max_val_loss"] = MAX_VAL_LOSS
        config["job"] = job
    if model_sha256 is not None:
        config["inference"]["model_sha256"] = model_sha256
    path.write_text(tomli_w.dumps(config))
    return path


@pytest.mark.e2e
def test_agent_rents_training_buys_inference_and_stops(provider, devnet, network, tessera_home,
                                                       tmp_path):
    reader = AgentBudget(Chain(network))
    token = PaymentToken(Chain(network))
    session = Account.create()    # signs payments, holds nothing
    wallet = Account.create()     # posts the order; only gas money of its own
    reader.chain.w3.provider.make_request("anvil_setBalance", [wallet.address, hex(10**18)])
    escrow = JobSpec.model_validate(SMALL_JOB).order.escrow
    budget = escrow + 2 * PRICE + PRICE // 2   # the training and two completions, no third
    nf = str(devnet.network_file)

    # the owner deposits and grants through the CLI
    granted = tessera(tessera_home, "agent", "grant", "--network", nf, "--account",
                      f"devnet:{OWNER}", "--session-key", session.address, "--budget",
                      tusd(budget), "--cap", tusd(escrow), "--payee", wallet.address, "--payee",
                      provider.address, "--deposit", "5.00", "--expiry", "1h", "--json")
    assert granted.returncode == 0, granted.stderr
    grant = json.loads(granted.stdout)
    grant_id, owner = grant["grant_id"], grant["owner"]
    assert (grant["budget"], grant["cap"], grant["key"]) == (budget, escrow, session.address)
    assert set(grant["payees"]) == {wallet.address, provider.address}
    deposit_before = reader.balance_of(owner)
    owner_wallet_before = token.balance_of(owner)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "agent.jsonl"
    config = agent_file(tmp_path / "trainer.toml", session="0x" + bytes(session.key).hex(),
                        wallet="0x" + bytes(wallet.key).hex(), grant=grant_id, url=url,
                        log=log, completions=2, job=SMALL_JOB)
    agent = subprocess.Popen([sys.executable, "-m", "tessera.cli", "agent", "run", str(config)],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env={**os.environ, "TESSERA_HOME": str(tessera_home)})
    server = None
    try:
        # the agent trains; then the provider serves that lease's result from its state dir
        trained = wait_until(lambda: agent.poll() is None and next(
            (r for r in records(log) if r["kind"] == "trained"), None), timeout=150,
            what="the agent's training", interval=0.5)
        lease_id = trained["lease_id"]
        wrong = tessera(tessera_home, "provider", "serve-model", "--lease", str(lease_id),
                        "--state-dir", str(tessera_home / "p-one"), "--account", "devnet:3",
                        "--network", nf)
        assert wrong.returncode == 1 and "was run by" in wrong.stderr
        server = subprocess.Popen(
            [sys.executable, "-m", "tessera.cli", "provider", "serve-model", "--lease",
             str(lease_id), "--state-dir", str(tessera_home / "p-one"), "--account",
             f"devnet:{PROVIDER_INDEX}", "--gas-account", f"devnet:{SERVER_GAS}", "--network", nf,
             "--port", str(port), "--per-request", tusd(PER_REQUEST), "--per-token",
             tusd(PER_TOKEN)], stdout=open(tmp_path / "server.log", "wb"),
            stderr=subprocess.STDOUT, env={**os.environ, "TESSERA_HOME": str(tessera_home)})
        output, _ = agent.communicate(timeout=120)
    finally:
        if agent.poll() is None:
            agent.kill()
        if server is not None:
            stop(server)
    assert agent.returncode == 0, output[-3000:]
    assert "goal met: 2 completion(s) bought" in output

    entries = records(log)
    kinds = [r["kind"] for r in entries]
    assert kinds[0] == "start" and kinds[-1] == "stop" and "error" not in kinds
    payments = [r for r in entries if r["kind"] == "payment"]
    assert [(p["purpose"], p["amount"]) for p in payments] == \
        [("training", escrow), ("inference", PRICE), ("inference", PRICE)]
    training, *completions = payments
    assert training["payee"] == wallet.address
    assert all(c["payee"] == provider.address and c["tokens"] == MAX_TOKENS for c in completions)
    for p in payments:   # each one an AgentPaid of this grant, with the logged amount
        receipt = reader.chain.w3.eth.get_transaction_receipt(p["tx"])
        [paid] = reader.payments(receipt)
        assert (paid["grant_id"], paid["amount"], paid["key"]) == \
            (grant_id, p["amount"], session.address)
    tenant_steps = {r["event"]: r for r in entries if r["kind"] == "tenant"}
    assert {"order-posted", "lease-created", "results-verified", "lease-closed"} <= set(tenant_steps)
    assert all(len(tenant_steps[e]["tx"]) == 66 and tenant_steps[e]["tx"].startswith("0x")
               for e in ("order-posted", "lease-created", "lease-closed"))
    assert trained["val_loss"] < MAX_VAL_LOSS
    assert any("recomputed" in check for check in trained["checks"])
    server_seen = next(r for r in entries if r["kind"] == "server")
    assert server_seen["model_sha256"] == trained["model_sha256"]
    # the owner paid exactly the escrow and two completions; the escrow's refund went back from
    # the agent's wallet to the owner, so the training cost the owner only what the lease spent
    assert deposit_before - reader.balance_of(owner) == escrow + 2 * PRICE
    returned = next(r for r in entries if r["kind"] == "return")
    assert returned["amount"] == escrow - trained["tenant_spent"] > 0
    assert returned["to"] == owner
    assert reader.chain.w3.eth.get_transaction_receipt(returned["tx"])["status"] == 1
    assert token.balance_of(wallet.address) == 0
    assert token.balance_of(owner) - owner_wallet_before == returned["amount"]
    assert reader.spent_in_period(grant_id) == escrow + 2 * PRICE

    # a second run wants one more completion from the same model: the grant's period budget
    # has PRICE // 2 left, so the client refuses before signing and the agent stops cleanly
    again = agent_file(tmp_path / "buyer.toml", session="0x" + bytes(session.key).hex(),
                       grant=grant_id, url=url, log=tmp_path / "buyer.jsonl", completions=1,
                       model_sha256=trained["model_sha256"])
    server = subprocess.Popen(
        [sys.executable, "-m", "tessera.cli", "provider", "serve-model", "--model",
         trained["results_dir"], "--account", f"devnet:{PROVIDER_INDEX}", "--gas-account",
         f"devnet:{SERVER_GAS}", "--network", nf, "--port", str(port)],
        stdout=open(tmp_path / "server2.log", "wb"), stderr=subprocess.STDOUT,
        env={**os.environ, "TESSERA_HOME": str(tessera_home)})
    try:
        spent = tessera(tessera_home, "agent", "run", str(again), timeout=120)
    finally:
        stop(server)
    assert spent.returncode == 0, spent.stdout[-3000:] + spent.stderr[-3000:]
    assert "budget spent" in spent.stdout and "over period budget" in spent.stdout
    [refusal] = [r for r in records(tmp_path / "buyer.jsonl") if r["kind"] == "refusal"]
    assert refusal["limit"] == "over period budget" and refusal["signatures"] == 0
    assert reader.balance_of(owner) == deposit_before - escrow - 2 * PRICE
    assert reader.spent_in_period(grant_id) == escrow + 2 * PRICE
    shown = tessera(tessera_home, "agent", "budget", str(grant_id), "--network", nf, "--json")
    assert shown.returncode == 0, shown.stderr
    state = json.loads(shown.stdout)
    assert (state["spent_in_period"], state["available"]) == (escrow + 2 * PRICE, PRICE // 2)
    assert set(state["payees"]) == {wallet.address, provider.address}


# -- the agent file: each mistake named, before anything is sent -------------------------------
GOOD = {"agent": {"name": "a", "session_key": "devnet:6", "grant": 1},
        "goal": {"completions": 2},
        "inference": {"url": "http://127.0.0.1:8402"}}


def _with(**tables) -> str:
    config = {k: dict(v) for k, v in GOOD.items()}
    for table, changes in tables.items():
        config[table] = {**config.get(table, {}), **changes}
    return tomli_w.dumps(config)


def test_a_good_agent_file_parses():
    config = parse_agent_config(_with(), "agent.toml")
    assert config.job is None and config.inference.prompts == ["def "]
    assert config.log_path().name == "a.jsonl"


@pytest.mark.parametrize("tables, named", [
    ({"goal": {"completions": 0}}, "goal.completions"),
    ({"agent": {"grant": 0}}, "agent.grant"),
    ({"agent": {"session_key": "alice"}}, "agent.session_key"),
    ({"agent": {"wallet": "0x1234"}}, "agent.wallet"),
    ({"inference": {"url": "ftp://x"}}, "inference.url"),
    ({"inference": {"max_tokens": 5000}}, "inference.max_tokens"),
    ({"inference": {"max_price": 0.5}}, "inference.max_price"),
    ({"inference": {"prompts": [""]}}, "inference.prompts"),
    ({"goal": {"max_val_loss": 2.0}}, "goal.max_val_loss needs a [job]"),
    ({"job": SMALL_JOB}, "agent.wallet is required"),
    ({"surprise": {"x": 1}}, "surprise"),
])
def test_a_bad_agent_file_names_the_field(tables, named):
    with pytest.raises(SpecError) as refused:
        parse_agent_config(_with(**tables), "agent.toml")
    assert named in str(refused.value) and "agent.toml" in str(refused.value)


def test_tessera_agent_run_refuses_a_bad_file_naming_it(tmp_path):
    bad = tmp_path / "agent.toml"
    bad.write_text(_with(goal={"completions": -1}))
    result = tessera(tmp_path, "agent", "run", str(bad), timeout=60)
    assert result.returncode == 1
    assert "goal.completions" in result.stderr and "agent.toml" in result.stderr


def test_the_example_agent_parses():
    example = Path(__file__).resolve().parents[2] / "examples" / "agent.toml"
    config = parse_agent_config(example.read_text(), example)
    assert config.job is not None and config.job.order.escrow == 750_000


@pytest.mark.parametrize("args, says", [
    (["provider", "serve-model", "--account", "devnet:2"], "exactly one of --model"),
    (["provider", "serve-model", "--model", ".", "--lease", "1", "--account", "devnet:2"],
     "exactly one of --model"),
    (["provider", "serve-model", "--lease", "1", "--account", "devnet:2"], "--state-dir"),
    (["agent", "grant", "--session-key", "devnet:6", "--budget", "1.00", "--cap", "2.00",
      "--payee", "devnet:6"], "--cap"),
    (["agent", "grant", "--session-key", "devnet:6", "--budget", "1.00", "--cap", "0.50"],
     "--payee"),
    (["agent", "grant", "--session-key", "bob", "--budget", "1", "--cap", "1", "--any-provider"],
     "--session-key"),
    (["agent", "grant", "--session-key", "devnet:6", "--budget", "lots", "--cap", "1",
      "--any-provider"], "--budget"),
    (["agent", "grant", "--session-key", "devnet:6", "--budget", "1", "--cap", "1",
      "--any-provider", "--period", "0s"], "--period"),
])
def test_commands_refuse_bad_options_before_connecting(args, says):
    from typer.testing import CliRunner

    from tessera.cli import app

    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and says in result.output, result.output
