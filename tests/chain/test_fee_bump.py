"""A transaction not mined in time is replaced on its nonce with raised fees (issue 15:
chain/fees.py, Chain.wait_for), on a real anvil whose blocks a griefer prices out of reach.

How anvil behaves here (checked): it refuses a transaction whose fee cap is under the next
block's base fee, and drops from its pool one that a new block's base fee leaves under (geth
keeps it, unmined): so a version priced out is gone from the pool, and only a new version, or
the same one sent again, can be mined. Both are what Chain does.

The adversary and the races, one test each below:
- a griefer fills blocks to push the base fee past a time-critical answer's fee cap
  (test_a_stuck_send_is_replaced_and_mined);
- several wait=False sends on consecutive nonces, the first priced out: every later one waits
  behind its nonce whatever its own fee; the wait for a later one raises the first
  (test_the_first_of_several_pending_sends_is_raised_first);
- a griefer who keeps the base fee above any fee: the raises stop at the cap, said once, and the
  wait's timeout stays the caller's (test_the_cap_is_respected_and_said_once);
- an account that cannot pay the raised fee: no confusing error, the wait goes on
  (test_no_funds_for_a_raise_does_not_crash_the_wait);
- a node that forgets its pool (a restart): the newest version is sent again
  (test_a_node_that_lost_its_pool_gets_the_transaction_again);
- the original mined while its replacement is being sent ("nonce too low"): the wait returns
  the original's receipt (test_a_replacement_racing_the_original_is_harmless);
- a rate-limited RPC failing the replacement's reads: the wait goes on
  (test_a_failing_fee_read_does_not_end_the_wait);
- a receipt lagging the nonce (a load-balanced RPC) is not taken for a dropped transaction
  (test_a_receipt_lagging_the_nonce_by_a_poll_is_not_taken_for_a_drop).
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from contextlib import contextmanager

import pytest
import requests
from eth_account import Account
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.support.anvil import rpc
from web3 import Web3
from web3.exceptions import TransactionNotFound

from tessera.chain.client import Chain, tx_hash
from tessera.chain.fees import bump_fees, fee_cap, raised, refusal
from tessera.errors import ChainError

GWEI = 10**9
LOW = 10**7   # the devnet's base fee is below a gwei: a first send is priced at ~1 gwei
SPENDER = "0x000000000000000000000000000000000000dEaD"
FEES_LOG = "tessera.chain.fees"


@pytest.fixture(scope="module")
def network(tmp_path_factory, private_devnet):
    with private_devnet(tmp_path_factory.mktemp("feebump")) as (_, network):
        yield network


def funded_chain(network) -> Chain:
    """A Chain with a fresh, funded account (its own nonces), replacing after 0.2 s."""
    account = Account.create()
    chain = Chain(network, account, replace_after_s=0.2)
    rpc(chain, "anvil_setBalance", account.address, hex(10**19))
    return chain


@pytest.fixture
def chain(network):
    """funded_chain, each transaction it sends kept in `records` with its versions."""
    chain = funded_chain(network)
    chain.records = []                       # every transaction sent, with its versions
    track = chain._track

    def spy(name, what, tx, raw):
        track(name, what, tx, raw)
        chain.records.append(chain._sent[name])
    chain._track = spy
    yield chain
    rpc(chain, "evm_setAutomine", True)


def approve(chain: Chain, amount: int = 1):
    return chain.payment_token.functions.approve(SPENDER, amount)


@contextmanager
def griefed(chain: Chain, base_fee: int, tick: float = 0.05):
    """Blocks mined only by this griefer, each priced at `base_fee` (as if the griefer filled the
    ones before): whenever a transaction is pending, a block is mined at that base fee, and the
    next one's is set low again, so that anvil takes any transaction into its pool, as geth's
    does, to leave it out of the next block if under the griefer's price. On exit the base fee
    is low again and anvil mines at once."""
    rpc(chain, "evm_setAutomine", False)
    stop = threading.Event()

    def grief():
        while not stop.wait(tick):
            if int(rpc(chain, "txpool_status")["pending"], 16):
                rpc(chain, "anvil_setNextBlockBaseFeePerGas", hex(base_fee))
                rpc(chain, "evm_mine")
                rpc(chain, "anvil_setNextBlockBaseFeePerGas", hex(LOW))
    thread = threading.Thread(target=grief, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        rpc(chain, "anvil_setNextBlockBaseFeePerGas", hex(LOW))
        rpc(chain, "evm_mine")
        rpc(chain, "evm_setAutomine", True)


def version(chain: Chain, receipt) -> dict:
    return chain.w3.eth.get_transaction(tx_hash(receipt))


def not_mined(chain: Chain, name: str) -> bool:
    try:
        return chain.w3.eth.get_transaction_receipt(name) is None
    except TransactionNotFound:
        return True


def assert_raised_each_time(fees: list[dict[str, int]]) -> None:
    for old, new in itertools.pairwise(fees):
        assert new["maxFeePerGas"] >= raised(old["maxFeePerGas"])
        assert new["maxPriorityFeePerGas"] >= raised(old["maxPriorityFeePerGas"])


def test_an_automined_send_is_never_replaced(chain):
    """The devnet mines at once: nothing is replaced, nothing is kept after the wait."""
    chain.replace_after_s = 30
    receipt = chain.send(approve(chain))
    (record,) = chain.records
    assert record.hashes == [tx_hash(receipt)] and chain._sent == {}


def test_a_stuck_send_is_replaced_and_mined(chain, caplog):
    """A griefer prices every block at 3 gwei after the answer was priced at ~1 gwei (2 x a tiny
    base fee + 1 gwei tip): the send's own wait replaces it at 2 x the current base fee + a
    raised tip, and the receipt is the replacement's. The next send takes the next nonce."""
    caplog.set_level(logging.INFO, FEES_LOG)
    nonce = chain.w3.eth.get_transaction_count(chain.address)
    with griefed(chain, 3 * GWEI):
        receipt = chain.send(approve(chain, 1), timeout=20)
        (record,) = chain.records
        assert len(record.hashes) >= 2 and tx_hash(receipt) in record.hashes[1:]
        assert not_mined(chain, record.hashes[0])
        assert_raised_each_time(record.fees)
        mined = version(chain, receipt)
        assert mined["nonce"] == nonce and mined["maxFeePerGas"] >= 2 * 3 * GWEI
        assert (mined["gas"], mined["input"].to_0x_hex()) == (record.tx["gas"], record.tx["data"])
        assert "replaced by " + tx_hash(receipt) in caplog.text
        following = chain.send(approve(chain, 2), timeout=20)   # priced at the current base fee
        assert version(chain, following)["nonce"] == nonce + 1
    assert chain.call(chain.payment_token.functions.allowance(chain.address, SPENDER)) == 2
    assert chain._sent == {}


def test_the_first_of_several_pending_sends_is_raised_first(chain):
    """wait=False sends on consecutive nonces (a validator's batch of answers): the first is
    priced out, the next two are priced at the raised base fee but wait behind the first's
    nonce. Waiting for the LAST one first (the worst order a caller could pick) still unblocks
    them all: the wait raises every due transaction on an earlier nonce first. Each later wait
    for the others returns at once, the first's receipt being its replacement's."""
    with griefed(chain, 3 * GWEI):
        first = chain.send(approve(chain, 1), wait=False)["transactionHash"]
        deadline = time.monotonic() + 10
        while chain.w3.eth.get_block("latest")["baseFeePerGas"] < 3 * GWEI:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        later = [chain.send(approve(chain, n), wait=False)["transactionHash"] for n in (2, 3)]
        last = chain.wait_for(later[-1], "approve", timeout=20)
        receipts = [chain.wait_for(sent, "approve", timeout=1) for sent in (first, later[0])]
    assert tx_hash(receipts[0]) != first.to_0x_hex()
    nonces = [version(chain, r)["nonce"] for r in (*receipts, last)]
    assert nonces == list(range(nonces[0], nonces[0] + 3))
    assert chain.call(chain.payment_token.functions.allowance(chain.address, SPENDER)) == 3


def test_the_cap_is_respected_and_said_once(chain, caplog):
    """A griefer holding the base fee at 100 gwei, far above a cap of 2 x the first fee: one
    raise to the cap, then none (one log line however many intervals pass), and the wait times
    out as it always did (ChainError naming the call and every hash). Once the griefer stops, a
    later wait for the same first hash sends the newest version again and returns its receipt."""
    caplog.set_level(logging.INFO, FEES_LOG)
    chain.max_fee_factor = 2
    with griefed(chain, 100 * GWEI):
        first = chain.send(approve(chain), wait=False)["transactionHash"]
        with pytest.raises(ChainError, match="approve .* not mined within 1.5s") as error:
            chain.wait_for(first, "approve", timeout=1.5)
    (record,) = chain.records
    assert record.cap == 2 * record.fees[0]["maxFeePerGas"]
    assert all(fees["maxFeePerGas"] <= record.cap for fees in record.fees)
    assert record.fees[-1]["maxFeePerGas"] == record.cap and not record.bumping
    assert all(name in str(error.value) for name in record.hashes)
    assert caplog.text.count("at the cap") == 1
    receipt = chain.wait_for(first, "approve", timeout=5)
    assert tx_hash(receipt) == record.hashes[-1]
    assert version(chain, receipt)["maxFeePerGas"] <= record.cap


def test_an_absolute_cap_in_wei(network):
    """max_fee_wei caps every version whatever the factor."""
    chain = Chain(network, Account.create(), max_fee_factor=100, max_fee_wei=5 * GWEI)
    assert chain.max_fee_wei == 5 * GWEI
    assert fee_cap({"maxFeePerGas": GWEI, "maxPriorityFeePerGas": GWEI}, 100, 5 * GWEI) \
        == 5 * GWEI


def test_no_funds_for_a_raise_does_not_crash_the_wait(chain, caplog):
    """An account holding just what the first version may cost: the node refuses the raise
    ("insufficient funds"); the wait logs it once, stops raising, and ends as a wait ends (the
    caller's timeout). Once blocks are cheap again, the first version, sent again, is mined and
    its receipt returned."""
    caplog.set_level(logging.INFO, FEES_LOG)
    with griefed(chain, 3 * GWEI):
        first = chain.send(approve(chain), wait=False)["transactionHash"]
        (record,) = chain.records
        rpc(chain, "anvil_setBalance", chain.address,
            hex(record.tx["gas"] * record.fees[0]["maxFeePerGas"]))
        with pytest.raises(ChainError, match="not mined within"):
            chain.wait_for(first, "approve", timeout=1)
    assert record.hashes == [first.to_0x_hex()] and not record.bumping
    assert caplog.text.count("cannot pay the raised fees") == 1
    receipt = chain.wait_for(first, "approve", timeout=5)
    assert tx_hash(receipt) == first.to_0x_hex()


def test_a_node_that_lost_its_pool_gets_the_transaction_again(chain):
    """A node restarted (its pool dropped) while the fees are at the cap already (max_fee_wei
    under the first fee: no raise at all): the wait sends the version it has again, and it is
    mined. Without the resend the wait could only time out."""
    chain.max_fee_wei = 1
    rpc(chain, "evm_setAutomine", False)
    first = chain.send(approve(chain), wait=False)["transactionHash"]
    rpc(chain, "anvil_dropAllTransactions")
    assert int(rpc(chain, "txpool_status")["pending"], 16) == 0
    rpc(chain, "evm_setAutomine", True)
    receipt = chain.wait_for(first, "approve", timeout=5)
    assert tx_hash(receipt) == first.to_0x_hex()


def test_a_replacement_racing_the_original_is_harmless(chain, caplog):
    """The original is mined just as its replacement goes out: the node answers "nonce too
    low", and the wait returns the original's receipt, with no error and no more raises."""
    caplog.set_level(logging.INFO, FEES_LOG)
    rpc(chain, "evm_setAutomine", False)
    first = chain.send(approve(chain), wait=False)["transactionHash"]
    rpc(chain, "evm_mine")
    (record,) = chain.records
    chain._replace(record)           # as a due wait would, a moment too late
    assert not record.bumping and len(record.hashes) == 1
    assert "nonce is used" in caplog.text
    assert tx_hash(chain.wait_for(first, "approve", timeout=5)) == first.to_0x_hex()


def test_a_failing_fee_read_does_not_end_the_wait(chain, caplog, monkeypatch):
    """A hosted RPC rate-limits the replacement's fee read (an HTTP 429, which Chain.rpc does
    not turn into RpcUnavailable): the wait logs it and goes on to its own timeout ('not
    mined within', never the HTTP error); once the RPC answers again, the wait is as before."""
    caplog.set_level(logging.INFO, FEES_LOG)
    rpc(chain, "evm_setAutomine", False)
    first = chain.send(approve(chain), wait=False)["transactionHash"]
    eth_class = type(chain.w3.eth)

    def limited(self, *args, **kwargs):
        raise requests.HTTPError("429 Client Error: Too Many Requests")
    monkeypatch.setattr(eth_class, "fee_history", limited)
    with pytest.raises(ChainError, match="not mined within"):
        chain.wait_for(first, "approve", timeout=0.6)
    assert "not replaced now (HTTPError" in caplog.text
    monkeypatch.undo()
    rpc(chain, "evm_mine")
    assert tx_hash(chain.wait_for(first, "approve", timeout=5)) == first.to_0x_hex()


def test_a_receipt_lagging_the_nonce_by_a_poll_is_not_taken_for_a_drop(chain, monkeypatch):
    """A load-balanced RPC: the `latest` nonce comes from a node a block ahead of the one
    asked for the receipt, which answers null. A wait that took that for TxDropped would have
    its caller do the action again, though it was done; it looks again a poll later and
    returns the receipt."""
    chain.replace_after_s = 30
    sent = chain.send(approve(chain), wait=False)["transactionHash"]   # mined at once
    # (patched on _ChainIdOnce's parent: web3 keeps the provider's bound make_request)
    original = Web3.HTTPProvider.make_request
    lagging = [True]

    def behind(self, method, params):
        if method == "eth_getTransactionReceipt" and lagging:
            lagging.pop()
            return {"jsonrpc": "2.0", "id": 1, "result": None}
        return original(self, method, params)
    monkeypatch.setattr(Web3.HTTPProvider, "make_request", behind)
    receipt = chain.wait_for(sent, "approve", timeout=5)
    assert not lagging and tx_hash(receipt) == sent.to_0x_hex() and chain._sent == {}


# -- the rule alone --------------------------------------------------------------------------
wei = st.integers(min_value=0, max_value=10**15)


@settings(max_examples=300, deadline=None)
@given(fee=wei, tip_share=st.floats(0, 1), base=wei, tip=wei, factor=st.integers(1, 20),
       absolute=st.none() | wei)
def test_bumped_fees_raise_enough_and_stay_under_the_cap(fee, tip_share, base, tip, factor,
                                                        absolute):
    """Each raise is at least +12.5 % on both fields (nodes take +10 %), the tip never over the
    fee cap, the fee cap at 2 x the base fee + the tip unless held at the cap, never over it;
    None only where the least raise is over the cap."""
    old = {"maxFeePerGas": fee, "maxPriorityFeePerGas": int(fee * tip_share)}
    cap = fee_cap(old, factor, absolute)
    new = bump_fees(old, base_fee=base, tip=tip, cap=cap)
    if new is None:
        assert raised(fee) > cap
        return
    assert new["maxFeePerGas"] >= raised(fee) and new["maxFeePerGas"] * 8 >= fee * 9
    assert new["maxPriorityFeePerGas"] >= raised(old["maxPriorityFeePerGas"])
    assert new["maxPriorityFeePerGas"] <= new["maxFeePerGas"] <= cap
    assert new["maxFeePerGas"] == cap or new["maxFeePerGas"] >= 2 * base + new[
        "maxPriorityFeePerGas"]


@settings(max_examples=100, deadline=None)
@given(price=st.integers(1, 10**13), node=wei, factor=st.integers(1, 20))
def test_legacy_prices_are_raised_the_same_way_until_the_cap(price, node, factor):
    """gasPrice chains: raised by 12.5 % at least, to the node's price if more; a run of raises
    ends at the cap, within log(factor) / log(1.125) steps."""
    old = {"gasPrice": price}
    cap = fee_cap(old, factor, None)
    steps = 0
    while (new := bump_fees(old, base_fee=0, tip=node, cap=cap)) is not None:
        assert raised(old["gasPrice"]) <= new["gasPrice"] <= cap
        old, steps = new, steps + 1
        assert steps <= math.log(factor) / math.log(9 / 8)
    assert raised(old["gasPrice"]) > cap


def test_node_refusals_are_told_apart():
    """geth's and anvil's words for a replacement refused."""
    assert refusal("already known") == "known"
    assert refusal("nonce too low") == "mined"
    assert refusal("replacement transaction underpriced") == "underpriced"
    assert refusal("max fee per gas less than block base fee") == "underpriced"
    assert refusal("Insufficient funds for gas * price + value") == "funds"
    assert refusal("insufficient funds for gas * price + value: balance 0") == "funds"
    assert refusal("intrinsic gas too low") == "other"
