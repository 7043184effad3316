"""An answer to an inclusion challenge that will never be mined (review4 finding 7): a node
evicted it from its pool and another transaction of the validator's account was mined on its
nonce (Chain.send resets the nonce after a failed send, and the next send asks the node's
pending count, which no longer counts the evicted answer). Chain.wait_for raises TxDropped at
once; validator/liveness_answers.py treats the answer as never sent, so its beats are read
again (the proven words) and sent again, on a real anvil with the pipeline tests' setup
(test_liveness_pipeline.py: batches of one beat, anvil mining one block per unmined receipt
wait).

Adversary: a griefer who fills the node's pool (or pushes the base fee up, which makes anvil
evict) right after the validator's answer goes out, hoping the validator keeps that answer
"pending" for ever and never shows its beats again: an honest validator slashed
`inclusion_slash` per unshown provider. Before the fix it was: every scan waited
PENDING_CHECK_S for a receipt that could never come, and left the beat out of its groups."""

from __future__ import annotations

from tests.support.anvil import rpc
from tests.validator import test_liveness_pipeline as pipeline
from web3.exceptions import TransactionNotFound

from tessera.chain import client
from tessera.protocol import liveness
from tessera.validator import liveness_answers

world, challenged = pipeline.world, pipeline.challenged   # the pipeline tests' anvil fixtures
SPENDER = "0x000000000000000000000000000000000000dEaD"


def never_mined(chain, name) -> bool:
    try:
        chain.w3.eth.get_transaction_receipt(name)
    except TransactionNotFound:
        return True
    return False


def shown_by_me(chain, cid: int) -> set[str]:
    return {e["args"]["provider"] for e in pipeline.my_answers(chain, cid)}


def test_a_pending_answer_whose_nonce_was_taken_is_sent_again(world, challenged, monkeypatch):
    """The first scan sends one batch (groups of one) and its receipt does not come in time:
    kept pending. The node then evicts it and another send of the validator's (another duty's
    approve, after a reset nonce) is mined on its nonce. The next scan's pending check gets
    TxDropped (its nonce used, no receipt, for DROP_CONFIRM_S; not a wait to its
    timeout), logs it, and sends that beat again with
    the other three: the challenge is answered in full in that scan."""
    _, _, chain = world
    duty, log, cid, ordered = challenged
    monkeypatch.setattr(client, "DROP_CONFIRM_S", 0.5)     # (3 s by default, across scans)
    monkeypatch.setattr(liveness_answers, "PIPELINE_BATCHES", 1)
    given = pipeline.sends(duty, monkeypatch)
    mining_wait_for = pipeline.congested(chain, monkeypatch)
    pipeline.answer(duty)                                  # one batch, pending
    assert len(given) == 1 and duty.answers._pending[cid]
    evicted = given[0][1].to_0x_hex()
    rpc(chain, "anvil_dropAllTransactions")                # the node evicts it
    chain._reset_nonce()                                   # (a send failed meanwhile)
    other = chain.send(chain.payment_token.functions.approve(SPENDER, 1), wait=False)
    rpc(chain, "evm_mine")
    assert chain.w3.eth.get_transaction(other["transactionHash"])["nonce"] == \
        chain._sent[evicted].nonce                         # its nonce, taken
    monkeypatch.setattr(chain, "wait_for", mining_wait_for)
    pipeline.answer(duty)                                  # the next scan
    assert [providers for providers, _ in given[1:]] == [[a.address] for a in ordered]
    assert never_mined(chain, evicted) and cid not in duty.answers._pending
    assert shown_by_me(chain, cid) == {a.address for a in ordered}
    assert duty.uptime.challenge(cid)["state"] == liveness.CHALLENGE_ANSWERED
    assert duty.store.answer_status(cid) == "answered"
    assert "liveness-answer-dropped" in log.getvalue()


def test_an_answer_whose_nonce_the_next_batch_took_is_sent_again_next_scan(world, challenged,
                                                                           monkeypatch):
    """Within a group: the node evicts the first batch right after taking it, and a send fails
    (the nonce is reset), so the group's second batch takes the first one's nonce and is mined.
    The first batch's receipt wait ends with TxDropped after DROP_CONFIRM_S (not
    RECEIPT_TIMEOUT_S later),
    which ends the scan's work (as a refusal does: the next scan comes at once, not
    WAITING_CHECK_S later); the next scan reads the proven words and sends that beat again
    with the rest."""
    _, _, chain = world
    duty, log, cid, ordered = challenged
    monkeypatch.setattr(client, "DROP_CONFIRM_S", 0.5)
    monkeypatch.setattr(liveness_answers, "PIPELINE_BATCHES", 2)
    monkeypatch.setattr(liveness_answers, "RECEIPT_TIMEOUT_S", 20)
    given = pipeline.sends(duty, monkeypatch)
    send = duty.uptime.answer_challenge
    nonces = []

    def evicted_after_the_first(cid_, providers, signatures, wait=True):
        out = send(cid_, providers, signatures, wait=wait)
        nonces.append(chain.w3.eth.get_transaction(out["transactionHash"])["nonce"])
        if len(given) == 1:
            rpc(chain, "anvil_dropAllTransactions")
            chain._reset_nonce()
        return out

    monkeypatch.setattr(duty.uptime, "answer_challenge", evicted_after_the_first)
    pipeline.answer(duty)                                  # first scan: A dropped, B mined
    first = given[0][1]
    assert nonces[:2] == [nonces[0]] * 2                   # the second took the first's nonce
    assert len(given) == 2 and shown_by_me(chain, cid) == {ordered[1].address}
    assert duty.answers._check_at.get(cid) is None         # looked at again at the next scan
    pipeline.answer(duty)                                  # the next scan
    assert [providers for providers, _ in given[2:]] == [[ordered[0].address],
                                                          [ordered[2].address],
                                                          [ordered[3].address]]
    assert never_mined(chain, first.to_0x_hex())
    assert shown_by_me(chain, cid) == {a.address for a in ordered}
    assert duty.uptime.challenge(cid)["state"] == liveness.CHALLENGE_ANSWERED
    assert "liveness-answer-dropped" in log.getvalue()
