"""A fourth outside review (issue 15) of replacing stuck transactions (chain/client.py:
Chain.send, wait_for, _replace_due, _replace; chain/fees.py), on a real anvil as
test_fee_bump.py does.

Attacks that fail (these pass): a replacement mined while nobody waits is found by the next
wait for the first hash (validator/liveness_answers.py waits again at its next scan); a send
made while a wait=False batch is being replaced takes the next nonce (no nonce reused, nothing
done twice).
Findings, FIXED (review4 findings 5-7 below): a wait polled every version's receipt every
0.1 s (now the account's nonce, once a poll); a replacement whose send timed out after the node
took it was never waited for (now recorded before it is sent); a wait whose nonce another
transaction took waited for ever (now TxDropped at once)."""

from __future__ import annotations

import collections
import time

import pytest
import requests
from tests.chain.test_fee_bump import funded_chain, network  # noqa: F401 (a fixture)
from tests.support.anvil import rpc
from web3 import Web3

from tessera.chain import client
from tessera.chain.client import Chain, tx_hash
from tessera.errors import ChainError, TxDropped

SPENDER = "0x000000000000000000000000000000000000dEaD"


@pytest.fixture
def chain(network):  # noqa: F811 (the imported fixture)
    """test_fee_bump's funded_chain; anvil does not mine until told (evm_mine), so every
    version stays pending; automine again afterwards."""
    chain = funded_chain(network)
    rpc(chain, "evm_setAutomine", False)
    yield chain
    rpc(chain, "evm_setAutomine", True)


def approve(chain: Chain, amount: int = 1):
    return chain.payment_token.functions.approve(SPENDER, amount)


def nonce_of(chain: Chain, receipt) -> int:
    return chain.w3.eth.get_transaction(tx_hash(receipt))["nonce"]


def test_a_replacement_mined_between_waits_is_found_by_the_next_wait(chain):
    """The daemon's pattern (liveness_answers keeps the first hash of an answer not mined
    within its wait and waits again at its next scan): the first wait times out after
    replacing; the replacement is mined while nobody waits; the next wait for the FIRST hash
    returns the replacement's receipt at once, and the record is gone."""
    first = chain.send(approve(chain), wait=False)["transactionHash"]
    with pytest.raises(ChainError, match="not mined within"):
        chain.wait_for(first, "approve", timeout=0.5)
    record = chain._sent[first.to_0x_hex()]
    assert len(record.hashes) >= 2
    rpc(chain, "evm_mine")
    receipt = chain.wait_for(first, "approve", timeout=1)
    assert tx_hash(receipt) == record.hashes[-1] and chain._sent == {}


def test_a_send_during_a_replaced_batch_takes_the_next_nonce(chain):
    """A double action through the nonces: a wait=False batch of two, the first replaced in a
    wait that times out, then a new send: it takes the nonce after the batch (the tracked
    _next_nonce, not a reused one); all three are mined once each, on three nonces."""
    batch = [chain.send(approve(chain, n), wait=False)["transactionHash"] for n in (1, 2)]
    with pytest.raises(ChainError):
        chain.wait_for(batch[0], "approve", timeout=0.5)
    later = chain.send(approve(chain, 3), wait=False)["transactionHash"]
    rpc(chain, "evm_mine")
    receipts = [chain.wait_for(h, "approve", timeout=2) for h in (*batch, later)]
    nonces = [nonce_of(chain, r) for r in receipts]
    assert nonces == list(range(nonces[0], nonces[0] + 3))
    assert chain.call(chain.payment_token.functions.allowance(chain.address, SPENDER)) == 3


def test_a_wait_polls_at_one_receipt_per_interval_whatever_the_versions(chain, monkeypatch):
    """FINDING 5 (a busy loop of RPC calls; low-medium). Each poll (RECEIPT_POLL_S, 0.1 s)
    asks eth_getTransactionReceipt for every version sent, newest first. A transaction raised
    to the default cap (max_fee_factor 10: about 20 versions at +12.5 %, reached in 10
    minutes at replace_after_s 30 while a griefer holds the base fee up) is polled at ~200
    calls a second, for as long as anything waits for it (the validator waits again at every
    scan): a hosted RPC's rate limit (often 10-50 a second) then answers 429, which web3
    raises as an HTTP error that Chain.rpc does not turn into RpcUnavailable. Before, one hash
    was polled: 10 a second. Measured here: the versions accumulated quickly (replace_after_s
    0), then a 1 s wait with no replacement due counted. Suggested fix: poll the account's
    `latest` nonce once per interval and look the versions' receipts up only once it has
    passed the transaction's nonce (which also tells finding 7's case apart).
    FIXED: so it is (Chain.wait_for); the receipts are asked for once the nonce is used."""
    chain.replace_after_s = 0.0
    first = chain.send(approve(chain), wait=False)["transactionHash"]
    record = chain._sent[first.to_0x_hex()]
    deadline = time.monotonic() + 15
    while record.bumping and time.monotonic() < deadline:
        with pytest.raises(ChainError):
            chain.wait_for(first, "approve", timeout=0.5)
    assert not record.bumping and len(record.hashes) >= 15
    chain.replace_after_s = 30.0
    calls: collections.Counter = collections.Counter()
    original = Web3.HTTPProvider.make_request

    def counting(self, method, params):
        calls[method] += 1
        return original(self, method, params)
    monkeypatch.setattr(Web3.HTTPProvider, "make_request", counting)
    started = time.monotonic()
    with pytest.raises(ChainError):
        chain.wait_for(first, "approve", timeout=1.0)
    rate = calls["eth_getTransactionReceipt"] / (time.monotonic() - started)
    assert rate <= 20, f"{rate:.0f} receipt calls a second for {len(record.hashes)} versions"


def test_a_replacement_whose_send_timed_out_is_still_waited_for(chain, monkeypatch):
    """FINDING 6 (a wait that never ends on a mined transaction; medium). The node takes the
    replacement but its answer times out (a loaded node, a proxy: requests.Timeout after
    Chain's 10 s): _replace lets RpcUnavailable out of the wait, before `accepted` records
    the version's hash. The replacement is mined; every later wait for the first hash polls
    only the versions it knows and ends 'not mined within', and the next replacement is
    refused ('nonce too low'), so it stops raising and goes on waiting. A caller told 'not
    mined' may well do the action again (a second transfer, a second payment) though it was
    done; liveness_answers keeps the answer pending at every scan. Suggested fix: the version's
    hash is known before it is sent (keccak of the signed bytes): record it as sent before
    send_raw_transaction, and keep waiting on an RPC error there (log it) instead of raising.
    FIXED: so it is (Chain._replace, fees.Sent.sending / unanswered). Here every replacement's
    answer is lost (the node has each): the first wait ends as a wait ends ('not mined
    within', not RpcUnavailable), every version delivered is one the record waits for, each
    raised above the one before (the lost one), and the newest, mined, is the receipt."""
    first = chain.send(approve(chain), wait=False)["transactionHash"]
    eth_class = type(chain.w3.eth)
    original = eth_class.send_raw_transaction
    delivered = []

    def flaky(self, raw):
        sent = original(self, raw)
        delivered.append(Web3.to_hex(sent))
        raise requests.Timeout("read timed out")   # the node has it; the answer is lost
    monkeypatch.setattr(eth_class, "send_raw_transaction", flaky)
    time.sleep(0.3)
    with pytest.raises(ChainError, match="not mined within"):
        chain.wait_for(first, "approve", timeout=1)
    record = chain._sent[first.to_0x_hex()]
    assert delivered and record.hashes[1:] == delivered
    rpc(chain, "evm_mine")
    mined = chain.w3.eth.get_transaction_receipt(delivered[-1])
    assert mined["status"] == 1 and nonce_of(chain, mined) == record.nonce
    receipt = chain.wait_for(first, "approve", timeout=2)
    assert tx_hash(receipt) == delivered[-1] and chain._sent == {}


def test_a_wait_whose_nonce_another_transaction_took_ends_and_says_so(chain, monkeypatch):
    """FINDING 7 (a wait for ever; an honest validator slashed; medium where pools evict).
    Answer A goes out wait=False; the node drops it from its pool (anvil drops a transaction
    a new base fee leaves under; a busy node evicts; anvil_dropAllTransactions here). The next
    send fails at the node (any refusal or RPC error) and, by design, resets the nonce: the
    send after it asks the node's pending count, which no longer counts A, and B takes A's
    nonce. A can never be mined now: its replacement is refused ('nonce too low', so it stops
    raising) and every wait for it runs to its timeout with 'not mined within'. The validator
    (liveness_answers) keeps A as pending at every scan and never sends its beats again:
    unshown, each costs inclusion_slash. Suggested fix: in wait_for, once the account's
    `latest` nonce has passed the record's and no version has a receipt, raise at once
    (TxRefused-like: 'nonce N used by another transaction') so the caller sends again; and on
    a reset, resend the tracked unmined transactions on their nonces (or start past them)
    instead of reusing their nonces.
    FIXED (the first part): TxDropped, a ChainError, at once, naming the nonce and the hashes;
    the record is forgotten. The caller sends again (liveness_answers: tests/validator/
    test_liveness_dropped.py)."""
    monkeypatch.setattr(client, "DROP_CONFIRM_S", 0.5)   # (3 s by default: a lagging RPC)
    a = chain.send(approve(chain, 1), wait=False)["transactionHash"]
    rpc(chain, "anvil_dropAllTransactions")
    eth_class = type(chain.w3.eth)
    original = eth_class.send_raw_transaction
    refusals = [ValueError({"message": "txpool is full"})]

    def busy(self, raw):
        if refusals:
            raise refusals.pop()
        return original(self, raw)
    monkeypatch.setattr(eth_class, "send_raw_transaction", busy)
    with pytest.raises(ChainError, match="not accepted by the node"):
        chain.send(approve(chain, 2), wait=False)
    rpc(chain, "evm_setAutomine", True)
    b = chain.send(approve(chain, 3), timeout=5)
    assert nonce_of(chain, b) == chain._sent[a.to_0x_hex()].nonce   # B took A's nonce
    record = chain._sent[a.to_0x_hex()]
    started = time.monotonic()
    with pytest.raises(ChainError) as error:
        chain.wait_for(a, "approve", timeout=4)
    assert time.monotonic() - started < 2 and "not mined within" not in str(error.value), (
        f"after {time.monotonic() - started:.1f} s: {error.value}")
    assert error.type is TxDropped and f"nonce {record.nonce}" in str(error.value)
    assert "another transaction was mined on its nonce" in str(error.value)
    assert all(name in str(error.value) for name in record.hashes)
    assert a.to_0x_hex() not in chain._sent
