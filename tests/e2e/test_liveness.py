"""Liveness without a transaction per provider per epoch (issue 15), with real processes: anvil,
a `tessera validator run` and a `tessera provider run`. Chain time jumps from epoch to epoch
(evm_setNextBlockTimestamp), so the test waits only for the daemons.

- With a validator up, the provider signs a beat each epoch and gets a receipt; it sends no
  heartbeat; the validator's one report per epoch names it; once final, the epoch is up.
- The validator's /liveness/beat answers junk with 4xx.
- A validator that named the provider challenges its own report from a second address (and
  does not answer: it is stopped): the provider claims nothing for it, waits for the second
  half of the answer-only epochs (the validators answer first), then answers with its beat,
  and keeps the epoch.
- The validator stopped: the provider falls back to the on-chain heartbeat in the same epoch,
  and claims the epoch the stopped validator receipted but never reported (Uptime.claim_beat)."""

from __future__ import annotations

import json
import tomllib

import httpx
import pytest
import tomli_w
from eth_account import Account
from tests.support.processes import QUICK_PROBES, ProviderProcess, ValidatorProcess, wait_until

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain
from tessera.chain.registry import ProviderRegistry
from tessera.chain.tokens import StakeToken
from tessera.chain.uptime import Uptime
from tessera.protocol import liveness

pytestmark = pytest.mark.e2e

PROVIDER, VALIDATOR, CHALLENGER = 3, 7, 9
QUIET = {**QUICK_PROBES, "hardware": {"enabled": False}, "outages": {"report": False}}


def jump(uptime: Uptime) -> int:
    """Mine a block at the first second of the next epoch; returns that epoch."""
    epoch = uptime.current_epoch() + 1
    w3 = uptime.chain.w3
    w3.provider.make_request("evm_setNextBlockTimestamp",
                             [uptime.genesis() + epoch * uptime.epoch_length()])
    w3.provider.make_request("evm_mine", [])
    return epoch


def proven(node: ProviderProcess, epoch: int) -> str | None:
    """How the provider says it proved `epoch` ('receipts', 'heartbeat'), or None yet."""
    live = httpx.get(f"{node.url}/healthz", timeout=5).json()["liveness"]
    return live["proven"] if live and live["epoch"] == epoch else None


def test_beats_receipts_reports_and_the_heartbeat_fallback(tmp_path, private_devnet):
    with private_devnet(tmp_path) as (devnet, network):
        chain = Chain(network)
        uptime = Uptime(chain)
        validator = ValidatorProcess(tmp_path, devnet.network_file, VALIDATOR, tables=QUIET)
        node = ProviderProcess(tmp_path, devnet.network_file, account=PROVIDER, price="1.00",
                               name="p-live")
        config = tomllib.loads(node.config.read_text())
        node.config.write_text(tomli_w.dumps({**config, "liveness": {"deadline_s": 4}}))

        def reports(epoch: int) -> list:
            return chain.events("Uptime", "LivenessReported", network.deploy_block,
                                argument_filters={"epoch": epoch})

        validator.start()
        node.start()
        try:
            index = ProviderRegistry(chain).index_of(node.address)
            first = jump(uptime)
            epoch = first
            for _ in range(5):   # each epoch receipted, the one before it reported
                wait_until(lambda e=epoch: proven(node, e), timeout=90, what=f"epoch {epoch}")
                assert proven(node, epoch) == "receipts"
                if epoch > first:
                    [report] = wait_until(lambda e=epoch - 1: reports(e), timeout=90,
                                          what=f"the report of epoch {epoch - 1}")
                    assert liveness.named(list(report["args"]["words"]), index)
                    assert report["args"]["validator"] == validator.address
                epoch = jump(uptime)
            receipted = epoch - 1                          # receipted; its report comes now
            wait_until(lambda: proven(node, epoch), timeout=90, what=f"epoch {epoch}")
            wait_until(lambda: reports(receipted), timeout=90, what="the last report")
            assert uptime.is_final(first) and uptime.is_up(node.address, first)
            assert not any(uptime.beats(node.address, e) for e in range(first, epoch + 1))
            assert chain.events("Uptime", "Heartbeat", network.deploy_block) == []

            # Junk at the real validator: 4xx with the reason, never a 500.
            url = f"{validator.url}/liveness/beat"
            stranger = Account.create()
            seed = uptime.seed(epoch)
            signed = liveness.sign_beat(stranger, network.chain_id, uptime.address, epoch, seed)
            for body, status, words in (
                    ({"provider": stranger.address, "epoch": epoch, "signature": signed}, 403,
                     "not registered"),
                    ({"provider": stranger.address, "epoch": epoch + 5, "signature": signed}, 409,
                     "current epoch"),
                    ({"provider": "0x12", "epoch": -1}, 422, "SignedBeat")):
                reply = httpx.post(url, json=body, timeout=5)
                assert reply.status_code == status and words in reply.text, reply.text
            assert httpx.post(url, content=b"x" * 10_000, timeout=5).status_code == 413

            # The validator stops (its report of `epoch` never comes): heartbeats from here on,
            # and the receipted, unreported epoch is claimed in the last epoch a claim can be.
            validator.stop()
            # The stopped validator's second address challenges its report of `receipted` (the
            # slash would go to itself): only the provider can answer, and its own answer takes
            # its gas out of the bond (the griefer's pair pays the provider's gas).
            challenger = Chain(network, devnet_account(CHALLENGER))
            StakeToken(challenger).fund(uptime.address, 10 * 10**18, "challenge bond")
            [report] = reports(receipted)
            words = list(report["args"]["words"])
            _, challenge_id = Uptime(challenger).challenge_inclusions(
                validator.address, receipted, words,
                liveness.words_of([index], ProviderRegistry(chain).provider_count()))

            def shown() -> list:
                return chain.events("Uptime", "InclusionAnswered", network.deploy_block,
                                    argument_filters={"challenge_id": challenge_id})

            wait_until(lambda: "inclusion-challenged" in (tmp_path / "p-live.log").read_text(),
                       timeout=90, what="the provider keeping the challenge")
            for _ in range(2):
                later = jump(uptime)
                wait_until(lambda e=later: uptime.beats(node.address, e), timeout=40,
                           what=f"the fallback heartbeat in epoch {later}")
                if later == epoch + 1:   # receipted's last claim epoch: its bit is disputed
                    assert shown() == []   # the validators' half of the answer time
            claims = wait_until(lambda: chain.events("Uptime", "BeatClaimed", network.deploy_block),
                                timeout=90, what="the claim of the unreported epoch")
            # receipted is not claimed (its challenge is being answered): only the unreported one
            assert [(c["args"]["provider"], c["args"]["epoch"], c["args"]["validator"])
                    for c in claims] == [(node.address, epoch, validator.address)]
            report_delay, answer_epochs = uptime.liveness_rules()
            moment = liveness.provider_answer_from(receipted, report_delay, answer_epochs,
                                                   uptime.genesis(), uptime.epoch_length())
            w3 = chain.w3
            if w3.eth.get_block("latest")["timestamp"] < moment:   # mid-epoch receipted + 3
                w3.provider.make_request("evm_setNextBlockTimestamp", [moment])
                w3.provider.make_request("evm_mine", [])
            [answer] = wait_until(shown, timeout=90, what="the provider's answer to the challenge")
            assert (answer["args"]["provider"], answer["args"]["answered_by"]) == \
                (node.address, node.address)
            # an own answer (its beat alone, from the moment): paid its gas at the fee's rate
            paid, fee = answer["args"]["to_answerer"], uptime.answer_fee()
            gas = w3.eth.get_transaction_receipt(answer["transactionHash"])["gasUsed"]
            rate = chain.uptime.functions.ANSWER_FEE_GAS().call()
            assert fee < paid <= uptime.most_paid_per_beat() and paid * rate // fee >= gas
            [settled] = chain.events("Uptime", "ChallengeResolved", network.deploy_block,
                                     argument_filters={"challenge_id": challenge_id})
            assert settled["args"]["unanswered"] == 0   # every named beat shown: settled at once
            assert answer["args"]["to_answerer"] + settled["args"]["bond_returned"] == 10 * 10**18
            assert uptime.live_word(receipted, index >> 8) >> (index & 255) & 1
            heartbeats = chain.events("Uptime", "Heartbeat", network.deploy_block)
            assert [h["args"]["epoch"] for h in heartbeats] == [epoch + 1, epoch + 2]
        finally:
            node.stop()
            validator.stop()
    def log(name: str) -> list[dict]:
        return [json.loads(line) for line in (tmp_path / f"{name}.log").read_text().splitlines()
                if line.startswith("{")]

    fallbacks = [line for line in log("p-live") if line["event"] == "heartbeat"]
    assert all("no validator receipted" in line["reason"] for line in fallbacks), fallbacks
    gas = [r["gas"] for r in log("validator") if r["event"] == "liveness-reported"]
    print(f"\nreceipted epochs {first}..{epoch}, heartbeats {[h['epoch'] for h in fallbacks]}, "
          f"report_liveness gas {gas}")
