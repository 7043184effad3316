"""Probes end to end: a real `tessera validator run` process probes a real provider process
across several epochs (time moved with evm_setNextBlockTimestamp), the provider is stopped for
some of them, and the validator posts one report per epoch. On chain: the missed epochs; from
the validator's HTTP: every leaf checks against the posted root; in the explorer: the same
counts, in the indexer and in the audit. Also measures the gas of a report."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from tests.support.processes import ProviderProcess, ValidatorProcess, wait_until
from web3 import Web3

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain, tx_hash
from tessera.chain.registry import ProviderRegistry
from tessera.daemons import stop
from tessera.explorer import db
from tessera.explorer.audit import audit
from tessera.explorer.indexer import Indexer, database_figures
from tessera.protocol import messages
from tessera.protocol.probes import (
    ProbeRequest,
    check_receipt_entry,
    receipt_typed_data,
    request_typed_data,
)

EPOCH = 60          # seconds of chain time; the test jumps from epoch to epoch
STAKE = 100 * 10**18
PROVIDER, FORGER, WRONG_KEY, VALIDATOR, GAS_VALIDATOR = 3, 4, 8, 7, 9
EXTRA_PROVIDERS = (2, 5, 6)  # registered on chain only (gas per provider covered)


class Forger:
    """A provider endpoint that answers probes with a receipt signed by another key.

    A fake on purpose: a real provider process never signs with a key other than its own, so
    this fault cannot be caused otherwise. It is registered on chain like any provider."""

    def __init__(self, chain_id: int, probes: str):
        provider, wrong = devnet_account(FORGER), devnet_account(WRONG_KEY)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                req = ProbeRequest.model_validate(body)
                typed = receipt_typed_data(chain_id, probes, provider.address, req.validator,
                                           req.epoch, req.challenge, req.deadline)
                answer = json.dumps({"provider": provider.address, "validator": req.validator,
                                     "epoch": req.epoch, "challenge": req.challenge,
                                     "deadline": req.deadline,
                                     "signature": messages.sign(wrong, typed)}).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def probe_devnet(tmp_path_factory, private_devnet):
    home = tmp_path_factory.mktemp("probes")
    with private_devnet(home, epoch_length=EPOCH) as (devnet, network):
        yield home, devnet, network


def register_provider(chain: Chain, account: int, endpoint: str) -> None:
    """Register a devnet account as a provider straight on chain (no daemon)."""
    ProviderRegistry(Chain(chain.network, devnet_account(account))).register(
        STAKE, "CPU", 1, 1024, 1, endpoint, 1)


def jump_to_next_epoch(chain: Chain) -> int:
    """Mine a block at the first second of the next epoch; returns that epoch."""
    probes = chain.probes
    epoch = probes.functions.current_epoch().call() + 1
    start = probes.functions.genesis().call() + epoch * EPOCH
    chain.w3.provider.make_request("evm_setNextBlockTimestamp", [start])
    chain.w3.provider.make_request("evm_mine", [])
    assert probes.functions.current_epoch().call() == epoch
    return epoch


def refusals_answered_by(provider: ProviderProcess, chain: Chain) -> None:
    """The provider signs nothing for a past deadline, another epoch, a non-validator, a
    request its validator did not sign, or a malformed body, and says why."""
    epoch = chain.probes.functions.current_epoch().call()

    def signed(signer: int = VALIDATOR, **change) -> dict:
        body = {"provider": provider.address, "validator": devnet_account(signer).address,
                "epoch": epoch, "challenge": "0x" + secrets.token_hex(32),
                "deadline": int(time.time()) + 30, **change}
        typed = request_typed_data(chain.network.chain_id, chain.probes.address,
                                   body["provider"], body["validator"], body["epoch"],
                                   body["challenge"], body["deadline"])
        return {**body, "signature": messages.sign(devnet_account(signer), typed)}

    unsigned = {k: v for k, v in signed().items() if k != "signature"}
    cases = [(signed(deadline=int(time.time()) - 1), 400, "has passed"),
             (signed(epoch=epoch + 1), 409, "current epoch"),
             (signed(WRONG_KEY), 403, "not a registered validator"),
             ({**signed(WRONG_KEY), "validator": devnet_account(VALIDATOR).address}, 403,
              "not by the validator"),
             (unsigned, 422, "signature"),
             ({**signed(), "challenge": "0x1234"}, 422, "challenge")]
    for body, status, words in cases:
        reply = httpx.post(f"{provider.url}/probe", json=body, timeout=10)
        assert reply.status_code == status and words in reply.text, (body, reply.text)
    good = signed()
    reply = httpx.post(f"{provider.url}/probe", json=good, timeout=10)
    assert reply.status_code == 200 and reply.json()["challenge"] == good["challenge"]


def test_validator_probes_reports_and_explorer_agrees(probe_devnet):
    home, devnet, network = probe_devnet
    chain = Chain(network)
    probes = chain.probes
    forger = Forger(network.chain_id, probes.address)
    register_provider(chain, FORGER, forger.url)
    provider = ProviderProcess(home, devnet.network_file, account=PROVIDER, price="1.00",
                               name="p-probed")
    validator = ValidatorProcess(home, devnet.network_file, account=VALIDATOR)
    up_epochs, down_epochs = [], []

    def probed(epoch: int, n: int = 2):
        doc = validator.receipts(epoch)
        health = validator.health()
        return doc if doc and len(doc["receipts"]) == n and health["pending_probes"] == 0 else None

    provider.start()
    validator.start()
    try:
        epoch = first = jump_to_next_epoch(chain)
        phases = ("up", "up", "down", "down", "up")
        for i, phase in enumerate(phases):
            wait_until(lambda e=epoch: probed(e), timeout=60, what=f"probes of epoch {epoch}")
            (up_epochs if phase == "up" else down_epochs).append(epoch)
            # Stop or restart only once this epoch's probes are in, so each epoch is all one phase.
            following = phases[i + 1] if i + 1 < len(phases) else phase
            if following == "down" and provider.proc.poll() is None:
                provider.stop()
            elif following == "up" and provider.proc.poll() is not None:
                provider.start()
            epoch = jump_to_next_epoch(chain)
        refusals_answered_by(provider, chain)
        last = max(up_epochs + down_epochs)
        wait_until(lambda: (validator.health()["last_posted_epoch"] or -1) >= last, timeout=60,
                   what="the last report posted")
        metrics = httpx.get(f"{validator.url}/metrics", timeout=5).text
        assert 'tessera_validator_reports_total{outcome="posted"}' in metrics
        docs = {e: validator.receipts(e) for e in up_epochs + down_epochs}
    finally:
        if validator.proc is not None:
            stop(validator.proc)
        provider.stop()
        forger.close()
    assert validator.proc.returncode == 0, validator.log.read_text()[-2000:]
    assert '"event": "stopped"' in validator.log.read_text()

    me, target, fake = (devnet_account(i).address for i in (VALIDATOR, PROVIDER, FORGER))
    # On chain: one report per probed epoch, with exactly the expected tallies.
    reports = {log["args"]["epoch"]: log for log in
               chain.events("Probes", "ProbeReport", network.deploy_block)}
    # The epoch the validator started in may be probed and reported too, when its random probe
    # moment came before the first jump (a race with the start, not driven by this test);
    # every driven epoch has exactly one report, and no other epoch has any.
    assert sorted(e for e in reports if e >= first) == sorted(up_epochs + down_epochs)
    assert {e for e in reports if e < first} <= {first - 1}
    tallies = chain.events("Probes", "ProbeTally", network.deploy_block)
    by = {(log["args"]["epoch"], log["args"]["provider"]): (log["args"]["answered"],
                                                            log["args"]["missed"]) for log in tallies}
    for e in up_epochs:
        assert by[(e, target)] == (1, 0)
    for e in down_epochs:
        assert by[(e, target)] == (0, 1)   # the stopped provider: missed, on chain
    for e in up_epochs + down_epochs:
        assert by[(e, fake)] == (0, 1)     # the forged receipt was refused
        assert probes.functions.reported(me, e).call()

    # Off chain: every leaf the validator serves checks against the root it posted.
    for e, doc in docs.items():
        root = bytes(reports[e]["args"]["receipts_root"])
        assert doc["root"] == "0x" + root.hex() and doc["report"]["status"] == "posted"
        assert doc["report"]["tx"] == tx_hash(reports[e])
        for entry in doc["receipts"]:
            assert check_receipt_entry(entry, root, doc["receipt_count"], network.chain_id,
                                       probes.address, me, e) is None
            if entry["provider"] == fake:
                assert "not by the provider" in entry["reason"]
        tampered = dict(doc["receipts"][0], answered=not doc["receipts"][0]["answered"],
                        signature="" if doc["receipts"][0]["answered"] else "0x" + "11" * 65)
        assert check_receipt_entry(tampered, root, doc["receipt_count"], network.chain_id,
                                   probes.address, me, e) is not None

    # The explorer: indexer and audit agree, and show what was posted.
    engine = db.make_engine(f"sqlite:///{home / 'explorer.db'}")
    Indexer(chain, engine, confirmations=0).sync()
    figures, _ = database_figures(engine)
    report_txs = {tx_hash(log) for log in reports.values()}
    # Totals over every report on chain, the start epoch's included when there is one.
    for who in (target, fake):
        answered = sum(a for (_, p), (a, _) in by.items() if p == who)
        missed = sum(m for (_, p), (_, m) in by.items() if p == who)
        a = figures[("probes.by_provider.answered", who)]
        m = figures[("probes.by_provider.missed", who)]
        assert (a.value, m.value) == (answered, missed)
        assert set(a.txs) == set(m.txs) == report_txs
    result = audit(chain, engine)
    assert result.agrees, result.problems


def test_report_gas(probe_devnet):
    """Gas of one report, from anvil receipts: fixed cost and cost per provider covered."""
    home, devnet, network = probe_devnet
    chain = Chain(network)
    for account in (*EXTRA_PROVIDERS, PROVIDER, FORGER):
        if not chain.registry.functions.is_registered(devnet_account(account).address).call():
            register_provider(chain, account, "http://127.0.0.1:9")
    registered = [chain.registry.functions.provider_at(i).call()
                  for i in range(chain.registry.functions.provider_count().call())]
    providers = sorted(registered, key=lambda a: int(a, 16))
    assert len(providers) >= 5
    reporter = Chain(network, devnet_account(GAS_VALIDATOR))
    cli = [sys.executable, "-m", "tessera.cli", "validator", "register", "--account",
           f"devnet:{GAS_VALIDATOR}", "--network", str(devnet.network_file)]
    low = subprocess.run([*cli, "--stake", "99"], capture_output=True, text=True, timeout=120)
    assert low.returncode == 1 and "below the minimum" in low.stderr
    assert not reporter.validators.functions.is_validator(reporter.address).call()
    ok = subprocess.run([*cli, "--stake", "100"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "registered: 0x" in ok.stdout, ok.stderr
    assert reporter.validators.functions.stake_of(reporter.address).call() == STAKE
    n = len(providers)
    for _ in range(n + 2):
        jump_to_next_epoch(chain)
    epoch = chain.probes.functions.current_epoch().call() - n - 1

    def report(k: int) -> int:
        nonlocal epoch
        tallies = [(p, 1, 1) for p in providers[:k]]
        receipt = reporter.send(reporter.probes.functions.report(
            epoch, Web3.keccak(text=f"root {epoch}"), 2 * k, tallies))
        epoch += 1
        return receipt["gasUsed"]

    first = report(1)  # the validator's first report opens its 256-epoch bitmap word
    later = {k: report(k) for k in range(1, n + 1)}
    per_provider = (later[n] - later[1]) / (n - 1)
    fixed = later[1] - per_provider
    print(f"report gasUsed: first ever {first} (1 provider); later, by providers covered: "
          + ", ".join(f"{k}: {g}" for k, g in later.items())
          + f"; per provider {per_provider:.0f}, fixed {fixed:.0f}")
    assert first > later[1]  # the bitmap word's first write
    assert all(later[k + 1] > later[k] for k in range(1, n))
    assert per_provider < 8_000 and later[1] < 65_000
