"""The validator's pipelined answers to a large inclusion challenge, on a real anvil
(validator/liveness_answers.py: groups of up to PIPELINE_BATCHES batches of MAX_ANSWERS, sent
on consecutive nonces without waiting, then their receipts read). MAX_ANSWERS is set to 1 and
PIPELINE_BATCHES to 2-3 here, so that four reported providers make several groups.

How the pipelining is shown: anvil's automine is off while the duty answers, and every receipt
wait that finds its transaction unmined mines ONE block (`evm_mine`), which takes whatever the
pool holds. A group sent without waiting lands in one block; the old code, one batch and then
its receipt, would put each batch in a block of its own (asserted on the receipts' blocks)."""

from __future__ import annotations

import pytest
import requests
from tests.support.anvil import rpc
from tests.validator.test_liveness import (
    IDLE,
    OTHERS,
    PROVIDER,
    STAKE,
    VALIDATOR,
    challenger_of,
    named,
    reported_epoch,
)
from web3.exceptions import TransactionNotFound

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain
from tessera.chain.registry import ProviderRegistry
from tessera.chain.uptime import Uptime
from tessera.errors import ChainError, RpcUnavailable
from tessera.protocol import liveness
from tessera.validator import liveness_answers
from tessera.validator.liveness import LivenessDuty
from tessera.validator.stake import ensure_validator

ACCOUNTS = (PROVIDER, IDLE, *OTHERS)   # the four providers a challenge names
GRIEFER = 8


@pytest.fixture(scope="module")
def world(tmp_path_factory, private_devnet):
    home = tmp_path_factory.mktemp("pipeline")
    with private_devnet(home) as (_, network):
        for account in ACCOUNTS:
            ProviderRegistry(Chain(network, devnet_account(account))).register(
                STAKE, "CPU", 1, 1024, 1, "http://127.0.0.1:9", 1)
        chain = Chain(network, devnet_account(VALIDATOR))
        ensure_validator(chain, STAKE, "http://127.0.0.1:9")
        yield home, network, chain


@pytest.fixture
def challenged(world, monkeypatch):
    """A fresh duty whose report of a new epoch names the four providers, challenged in full;
    batches of one beat; anvil mining one block per unmined receipt wait (module docstring)
    while the duty answers: (duty, its log, challenge id, providers in registry order)."""
    _, network, chain = world
    duty, log, epoch, words = reported_epoch(world, ACCOUNTS)
    _, cid = challenger_of(network).challenge_inclusions(chain.address, epoch, words,
                                                         named(chain, ACCOUNTS))
    duty.answers._max_answers = 1
    # in registry order, as these tests name the batches (each validator starts at a place of
    # its own: test_liveness_answer_batches.test_validators_start_at_different_places)
    monkeypatch.setattr(duty.answers, "_order", lambda todo: todo)
    wait_for = chain.wait_for

    def mining_wait_for(sent, what, timeout=60):
        try:
            chain.w3.eth.get_transaction_receipt(sent)
        except TransactionNotFound:
            rpc(chain, "evm_mine")
        return wait_for(sent, what, timeout)

    monkeypatch.setattr(chain, "wait_for", mining_wait_for)
    registry = ProviderRegistry(chain)
    ordered = sorted((devnet_account(a) for a in ACCOUNTS),
                     key=lambda a: registry.index_of(a.address))
    rpc(chain, "evm_setAutomine", False)
    try:
        yield duty, log, cid, ordered
    finally:
        rpc(chain, "evm_setAutomine", True)
        duty.close()


def answer(duty: LivenessDuty) -> None:
    duty.answer_challenges(duty.uptime.current_epoch())


def my_answers(chain: Chain, cid: int) -> list[dict]:
    """The InclusionAnswered events this validator's transactions emitted on `cid`."""
    shown = chain.events("Uptime", "InclusionAnswered", chain.network.deploy_block,
                         argument_filters={"challenge_id": cid})
    return [e for e in shown if e["args"]["answered_by"] == chain.address]


def sends(duty: LivenessDuty, monkeypatch) -> list[list]:
    """Every answer_challenge the duty tries from now: [providers given, tx hash (None if
    refused at estimate time or not sent)]."""
    given: list = []
    send = duty.uptime.answer_challenge

    def recorded(cid, providers, signatures, wait=True):
        given.append([list(providers), None])
        out = send(cid, providers, signatures, wait=wait)
        given[-1][1] = out["transactionHash"]
        return out

    monkeypatch.setattr(duty.uptime, "answer_challenge", recorded)
    return given


def congested(chain: Chain, monkeypatch):
    """From now on every receipt wait of `chain` ends as a congested node's would ("not mined
    within"); returns the real wait_for, to put back once the congestion is over."""
    real = chain.wait_for

    def not_mined(sent, what, timeout=60):
        raise ChainError(f"{what} ({sent.hex()}) not mined within {timeout}s")

    monkeypatch.setattr(chain, "wait_for", not_mined)
    return real


def nonce(chain: Chain, block: str = "latest") -> int:
    return chain.w3.eth.get_transaction_count(chain.address, block)


def test_a_challenge_larger_than_a_group_is_answered_a_group_a_block(world, challenged,
                                                                     monkeypatch):
    """Four named, batches of one, groups of three: one scan sends the first three without
    waiting (consecutive nonces), all mined in ONE block, then the fourth; the challenge is
    answered in full, each beat paid once, and the log line names the group's size.
    Adversary: a griefer naming a whole large report in the last block of the challenge
    window, betting on one batch a block (157 blocks for 10,000 providers, past a 10-minute
    window): a group of PIPELINE_BATCHES batches goes into each block instead."""
    _, _, chain = world
    duty, log, cid, _ = challenged
    monkeypatch.setattr(liveness_answers, "PIPELINE_BATCHES", 3)
    given = sends(duty, monkeypatch)
    before = nonce(chain)
    answer(duty)
    blocks = [chain.w3.eth.get_transaction_receipt(h)["blockNumber"] for _, h in given]
    assert len(given) == 4 and blocks[0] == blocks[1] == blocks[2] < blocks[3]
    assert nonce(chain) - before == 4 == len(my_answers(chain, cid))
    assert duty.uptime.challenge(cid)["state"] == liveness.CHALLENGE_ANSWERED
    assert duty.store.answer_status(cid) == "answered"
    assert log.getvalue().count('"group": 3') == 3 and log.getvalue().count('"group": 1') == 1


def test_a_beat_shown_between_groups_is_not_sent_again(world, challenged, monkeypatch):
    """G1 with groups: the proven words are read again before every group, so a beat its
    provider showed after the first group was cut (it answers its own inclusion, or a
    colleague does) is never given again: no wasted batch, no block space lost."""
    _, network, chain = world
    duty, log, cid, ordered = challenged
    monkeypatch.setattr(liveness_answers, "PIPELINE_BATCHES", 2)
    given = sends(duty, monkeypatch)
    cut = duty.answers._next_group
    late = ordered[2]

    def cut_after_the_provider_answered(epoch, todo):
        if given:   # a group went out: its provider shows the third beat before the next cut
            # (not even tried again: no estimate, no batch that could revert on chain)
            signature = bytes.fromhex(duty.store.beat(epoch, late.address)[2:])
            Uptime(Chain(network, late)).answer_challenge(cid, [late.address], [signature],
                                                          wait=False)
            rpc(chain, "evm_mine")
        return cut(epoch, todo)

    monkeypatch.setattr(duty.answers, "_next_group", cut_after_the_provider_answered)
    answer(duty)
    assert [p for providers, _ in given for p in providers] == \
        [ordered[0].address, ordered[1].address, ordered[3].address]
    assert len(my_answers(chain, cid)) == 3
    assert duty.uptime.challenge(cid)["state"] == liveness.CHALLENGE_ANSWERED
    assert "liveness-answer-refused" not in log.getvalue()


def test_one_batch_of_a_group_front_run_does_not_stop_the_rest(world, challenged,
                                                               monkeypatch):
    """Adversary: a griefer copies one batch of a group from the mempool and sends it first
    with a higher tip, so that the validator's copy reverts on chain ("every beat given was
    shown already": nothing in it is new) - hoping the validator takes the revert for a
    refusal and stops, leaving the rest of the group and the next groups unsent. The revert
    is read as done (every beat of the batch is shown now), the group's other batches land in
    the same block, and the next group is sent: the challenge is answered in one scan."""
    _, network, chain = world
    duty, log, cid, ordered = challenged
    monkeypatch.setattr(liveness_answers, "PIPELINE_BATCHES", 3)
    given = sends(duty, monkeypatch)
    send = duty.uptime.answer_challenge
    griefer = Chain(network, devnet_account(GRIEFER))

    def front_run_the_second(cid_, providers, signatures, wait=True):
        out = send(cid_, providers, signatures, wait=wait)
        if len(given) == 2:
            fn = griefer.uptime.functions.answer_challenge(cid_, providers, signatures)
            tx = fn.build_transaction({
                "from": griefer.address, "nonce": nonce(griefer, "pending"), "gas": 1_000_000,
                "maxFeePerGas": 100 * 10**9, "maxPriorityFeePerGas": 50 * 10**9,
                "chainId": network.chain_id})
            griefer.w3.eth.send_raw_transaction(
                griefer.account.sign_transaction(tx).raw_transaction)
        return out

    monkeypatch.setattr(duty.uptime, "answer_challenge", front_run_the_second)
    answer(duty)
    receipts = [chain.w3.eth.get_transaction_receipt(h) for _, h in given]
    assert [r["status"] for r in receipts] == [1, 0, 1, 1]           # the copy went first
    assert receipts[0]["blockNumber"] == receipts[2]["blockNumber"] < receipts[3]["blockNumber"]
    copied = [e for e in chain.events("Uptime", "InclusionAnswered", network.deploy_block,
                                      argument_filters={"challenge_id": cid})
              if e["args"]["answered_by"] == griefer.address]
    assert [e["args"]["provider"] for e in copied] == [ordered[1].address]
    assert len(my_answers(chain, cid)) == 3
    assert duty.uptime.challenge(cid)["state"] == liveness.CHALLENGE_ANSWERED
    assert duty.store.answer_status(cid) == "answered"
    assert "liveness-answer-refused" not in log.getvalue()


@pytest.mark.parametrize("failure", [requests.ConnectionError("connection reset"),
                                     ValueError("the node's pool is full")],
                         ids=["unreachable", "refused-by-the-node"])
def test_a_send_failing_mid_group_leaves_no_nonce_gap(world, challenged, monkeypatch,
                                                      failure):
    """The second send of a group fails before the node has it (the RPC drops, or the node
    refuses the raw transaction): nothing after it is sent in that group, and the next send
    asks the node's count again, so the next scan's transactions are not stuck behind a
    nonce nobody sent (anvil would keep them queued, and the receipt waits would time out:
    RECEIPT_TIMEOUT_S is short here). RpcUnavailable propagates (the daemon retries the
    scan); a node's refusal is logged, and the first batch's receipt read first. The next
    scan answers the rest; a beat of the first batch still unmined then is sent again and
    reverts as shown already, which is done, not a refusal."""
    _, _, chain = world
    duty, log, cid, _ = challenged
    monkeypatch.setattr(liveness_answers, "PIPELINE_BATCHES", 3)
    monkeypatch.setattr(liveness_answers, "RECEIPT_TIMEOUT_S", 3)
    given = sends(duty, monkeypatch)
    raw_send = chain.w3.eth.send_raw_transaction
    calls = []

    def failing_second(raw):
        calls.append(raw)
        if len(calls) == 2:
            raise failure
        return raw_send(raw)

    monkeypatch.setattr(chain.w3.eth, "send_raw_transaction", failing_second)
    before = nonce(chain)
    if isinstance(failure, ValueError):
        answer(duty)
        assert "liveness-answer-error" in log.getvalue() and "pool is full" in log.getvalue()
        assert nonce(chain) - before == 1 == len(my_answers(chain, cid))
    else:
        with pytest.raises(RpcUnavailable):
            answer(duty)
        assert nonce(chain, "pending") - before == 1
    assert [sent is not None for _, sent in given] == [True, False]   # none after it
    answer(duty)                                        # the next scan
    assert nonce(chain) == nonce(chain, "pending")      # every transaction sent was mined
    assert len(my_answers(chain, cid)) == 4
    assert duty.uptime.challenge(cid)["state"] == liveness.CHALLENGE_ANSWERED
    assert "liveness-answer-refused" not in log.getvalue()

