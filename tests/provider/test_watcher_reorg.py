"""The provider daemon's event watcher (provider/node.py) across reorgs, in process against a
real anvil: reorgs are faked with evm_snapshot / evm_revert (as tests/validator/test_liveness.py
does for the validator's challenge scan), chain time is moved block by block.

Adversary: a validator that reported the node challenges its own report from a second address,
and a reorg (or a challenger that times its transaction with one) puts the InclusionsChallenged
in a block the watcher's cursor has already passed. Unanswered, the node's epoch is revoked at
finality and the validator's own challenge takes the slash. So the watcher reads its last
`confirmations` blocks again whenever the head is not the child of the last head it applied;
and since that re-reads events, every repeat must be harmless: a challenge is kept once and
answered once (the chain is asked whether it is still open before an answer is sent), after a
restart too, and an answer that a reorg dropped is sent again. A challenge names any set of a
report's providers: the node answers one naming it among others, for itself alone.

The node answers only from the second half of the answer-only epochs
(protocol.liveness.provider_answer_from; the validators answer first): each test moves chain
time there (`to_moment`) before it expects an answer, and a griefer's challenge of an honest
report that the validator answers costs the node no transaction at all."""

from __future__ import annotations

import io

import pytest
from tests.support.anvil import mine, rpc

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain
from tessera.chain.registry import ProviderRegistry
from tessera.chain.tokens import StakeToken
from tessera.chain.uptime import Uptime
from tessera.logs import EventLog
from tessera.protocol import liveness
from tessera.provider.config import ProviderConfig
from tessera.provider.node import ProviderNode
from tessera.validator.stake import ensure_validator

PROVIDER, VALIDATOR, CHALLENGER, OPENER, OTHER = 3, 7, 9, 4, 5
STAKE = 100 * 10**18
CONFIRMATIONS = 8


def next_epoch(uptime: Uptime) -> int:
    epoch = uptime.current_epoch() + 1
    rpc(uptime.chain, "evm_setNextBlockTimestamp", uptime.genesis() + epoch * uptime.epoch_length())
    rpc(uptime.chain, "evm_mine")
    return epoch


def to_moment(uptime: Uptime, epoch: int) -> int:
    """Mine a block at the moment the provider answers challenges on `epoch`; its epoch."""
    report_delay, answer_epochs = uptime.liveness_rules()
    moment = liveness.provider_answer_from(epoch, report_delay, answer_epochs, uptime.genesis(),
                                           uptime.epoch_length())
    rpc(uptime.chain, "evm_setNextBlockTimestamp", moment)
    rpc(uptime.chain, "evm_mine")
    return uptime.current_epoch()


def provider_node(tmp_path, network_file, from_block: int) -> tuple[ProviderNode, io.StringIO]:
    """A provider daemon's node in process (its watcher driven by the test: no threads), its
    cursor at `from_block`; a second call with the same folder is a restart."""
    config = ProviderConfig.model_validate({
        "provider": {"account": f"devnet:{PROVIDER}", "network": str(network_file), "port": 9,
                     "state_dir": str(tmp_path / "provider")},
        "pricing": {"price_per_gpu_hour": "1.00"},
        "liveness": {"confirmations": CONFIRMATIONS}})
    stream = io.StringIO()
    node = ProviderNode(config, EventLog("provider", stream))
    node.chain_every_s = 0                             # each poll reads the head
    if node.state.get("last_block") is None:
        node.state.put("last_block", str(from_block))
    return node, stream


@pytest.fixture(scope="module")
def world(tmp_path_factory, private_devnet):
    """A registered provider (and another one) whose beat of an epoch a validator reported;
    `words` is the report, `named` the bitmap naming the provider alone."""
    home = tmp_path_factory.mktemp("watcher")
    with private_devnet(home) as (devnet, network):
        for account in (OTHER, PROVIDER):   # the node's registry index is not 0
            ProviderRegistry(Chain(network, devnet_account(account))).register(
                STAKE, "CPU", 1, 1024, 1, "http://127.0.0.1:9", 1)
        provider = Chain(network, devnet_account(PROVIDER))
        validator = Chain(network, devnet_account(VALIDATOR))
        ensure_validator(validator, STAKE, "http://127.0.0.1:9")
        uptime = Uptime(validator)
        epoch = next_epoch(uptime)
        Uptime(Chain(network, devnet_account(OPENER))).open_epoch()
        signature = liveness.sign_beat(provider.account, network.chain_id, uptime.address,
                                       epoch, uptime.seed(epoch))
        next_epoch(uptime)
        registry = ProviderRegistry(validator)
        indices = [registry.index_of(devnet_account(a).address) for a in (PROVIDER, OTHER)]
        words = liveness.words_of(indices, registry.provider_count())
        named = liveness.words_of(indices[:1], registry.provider_count())
        uptime.report_liveness(epoch, words)
        challenger = Chain(network, devnet_account(CHALLENGER))
        StakeToken(challenger).fund(uptime.address, 10 * 10**18, "challenge bond")
        state = {"snapshot": rpc(challenger, "evm_snapshot")}
        yield home, devnet, network, epoch, signature, (words, named), state


@pytest.fixture
def world_again(world):
    """The world as the fixture left it (each test challenges the same report)."""
    *values, state = world
    chain = Chain(values[2])
    assert rpc(chain, "evm_revert", state["snapshot"]) is True
    state["snapshot"] = rpc(chain, "evm_snapshot")
    return values


def answers(chain: Chain, challenge_id: int) -> int:
    return len(chain.events("Uptime", "InclusionAnswered", chain.network.deploy_block,
                            argument_filters={"challenge_id": challenge_id}))


def test_a_challenge_a_reorg_puts_behind_the_cursor_is_answered_once(world_again, tmp_path):
    home, devnet, network, epoch, signature, (words, named) = world_again
    chain = Chain(network, devnet_account(CHALLENGER))
    uptime = Uptime(chain)
    node, log = provider_node(tmp_path, devnet.network_file, chain.block_number())
    node.state.save_beat(epoch, signature)            # what its liveness thread had signed
    node.poll_once()
    snapshot = rpc(chain, "evm_snapshot")
    passed = mine(chain, 3)
    node.poll_once()                                   # the cursor passes 3 blocks
    assert int(node.state.get("last_block")) == passed
    assert rpc(chain, "evm_revert", snapshot) is True  # the reorg
    _, challenge_id = uptime.challenge_inclusions(devnet_account(VALIDATOR).address, epoch,
                                                  words, named)
    challenged_in = chain.block_number()
    assert challenged_in < passed                      # behind the cursor
    mine(chain, passed + 1 - chain.block_number())     # the head: one past the cursor
    node.poll_once()                                   # not the child of the head it applied
    assert [c[0] for c in node.state.open_challenges()] == [challenge_id]
    # A repeat in the same process: a head skipped, so the range is read again from
    # `confirmations` blocks back (the challenge's log with it): handled once.
    mine(chain, 2)
    node.poll_once()
    nonce = chain.w3.eth.get_transaction_count(node.address)
    node.heartbeats.answers.answer(uptime.current_epoch())   # the validators' half: nothing
    assert chain.w3.eth.get_transaction_count(node.address) == nonce
    current = to_moment(uptime, epoch)
    node.poll_once()
    node.heartbeats.answers.answer(current)
    assert uptime.challenge(challenge_id)["state"] == 2 and answers(chain, challenge_id) == 1
    assert log.getvalue().count("inclusion-challenged") == 1

    # A restart: nothing remembered, its last `confirmations` blocks (the challenge's among
    # them) are read again. The chain says answered: no second transaction.
    node.shutdown()
    again, log2 = provider_node(tmp_path, devnet.network_file, 0)
    assert int(again.state.get("last_block")) - CONFIRMATIONS < challenged_in
    nonce = chain.w3.eth.get_transaction_count(node.address)
    again.poll_once()
    assert again.state.challenge_outcome(challenge_id) == ""      # to be checked again
    again.heartbeats.answers.answer(current)
    assert answers(chain, challenge_id) == 1
    assert chain.w3.eth.get_transaction_count(node.address) == nonce
    assert again.state.challenge_outcome(challenge_id) == "answered"
    assert "inclusion-challenge" not in log2.getvalue()             # nothing new to say
    again.shutdown()


def test_an_answer_a_reorg_dropped_is_sent_again(world_again, tmp_path):
    """The challenge's block survives, the answer's does not (its transaction is lost, as
    evm_revert loses it): the watcher re-reads the challenge's log once the head is not the
    child of the last it applied, checks the chain, and answers again."""
    home, devnet, network, epoch, signature, (words, named) = world_again
    chain = Chain(network, devnet_account(CHALLENGER))
    uptime = Uptime(chain)
    _, challenge_id = uptime.challenge_inclusions(devnet_account(VALIDATOR).address, epoch,
                                                  words, named)
    node, log = provider_node(tmp_path, devnet.network_file, chain.block_number() - 1)
    node.state.save_beat(epoch, signature)
    node.poll_once()
    current = to_moment(uptime, epoch)
    before_answer = rpc(chain, "evm_snapshot")
    node.heartbeats.answers.answer(current)
    assert uptime.challenge(challenge_id)["state"] == 2
    node.poll_once()                                   # the answer's block applied
    assert rpc(chain, "evm_revert", before_answer) is True
    node.chain._reset_nonce()                          # the answer's nonce is free again
    assert uptime.challenge(challenge_id)["state"] == 1
    mine(chain, 2)
    node.poll_once()
    node.heartbeats.answers.answer(current)
    assert uptime.challenge(challenge_id)["state"] == 2
    assert log.getvalue().count("inclusion-challenge-answered") == 2
    node.shutdown()


def test_a_challenge_naming_the_node_among_others_is_answered_for_the_node(world_again,
                                                                         tmp_path):
    """One challenge names the whole report (the node and another provider): the node answers
    its own inclusion alone (its bit proven, the challenge still open for the other), and the
    answer, an own answer (Uptime.own_answer_from on), pays it the gas it used at the answer
    fee's rate (challenge_bond / 512 per ANSWER_FEE_GAS): this is the challenge's first answer,
    the dearest, 9-10 fees. Adversary: a challenger hiding the node among others, hoping it
    looks only for challenges of it alone."""
    home, devnet, network, epoch, signature, (words, _) = world_again
    chain = Chain(network, devnet_account(CHALLENGER))
    uptime = Uptime(chain)
    _, challenge_id = uptime.challenge_inclusions(devnet_account(VALIDATOR).address, epoch,
                                                  words, words)
    node, log = provider_node(tmp_path, devnet.network_file, chain.block_number() - 1)
    node.state.save_beat(epoch, signature)
    node.poll_once()
    assert [c[0] for c in node.state.open_challenges()] == [challenge_id]
    node.heartbeats.answers.answer(to_moment(uptime, epoch))
    [shown] = chain.events("Uptime", "InclusionAnswered", network.deploy_block,
                           argument_filters={"challenge_id": challenge_id})
    assert (shown["args"]["provider"], shown["args"]["answered_by"]) == (node.address,) * 2
    fee, paid = uptime.answer_fee(), shown["args"]["to_answerer"]
    gas = chain.w3.eth.get_transaction_receipt(shown["transactionHash"])["gasUsed"]
    rate = chain.uptime.functions.ANSWER_FEE_GAS().call()
    assert fee == 10 * 10**18 // 512 and 8 * fee < paid < 11 * fee
    assert gas <= paid * rate // fee <= 1.25 * gas        # its gas, at the fee's rate
    index = node.heartbeats.answers.registry_index()
    assert index == 1 and uptime.proven_word(epoch, 0) == 1 << index
    challenge = uptime.challenge(challenge_id)
    assert (challenge["state"], challenge["named"], challenge["answered"]) == (1, 2, 1)
    assert node.state.challenge_outcome(challenge_id) == "answered"
    node.shutdown()


def test_a_griefers_challenge_the_validator_answers_costs_the_node_nothing(world_again, tmp_path):
    """The griefing (issue 15: a lone answer costs 2.8-10.5 answer fees of gas, paid back since
    as an own answer, tests/contracts/test_liveness_attacks_2.py): a griefer names every
    inclusion of an honest report. The validator, which holds the beats, shows them at once in
    one batch (done here with its key, as validator/liveness_answers.py does); the node waits
    for its moment, reads the challenge once, records `answered-by-another`, and sends no
    transaction: its nonce does not move, whatever the griefer pays. Adversary: a challenge
    sent in the last epoch of the challenge window gives the node the same moment
    (tests/provider/test_inclusion_answer_timing.py for the last second)."""
    home, devnet, network, epoch, signature, (words, _) = world_again
    chain = Chain(network, devnet_account(CHALLENGER))
    uptime = Uptime(chain)
    next_epoch(uptime)                                 # the last epoch of the challenge window
    _, challenge_id = uptime.challenge_inclusions(devnet_account(VALIDATOR).address, epoch,
                                                  words, words)
    node, log = provider_node(tmp_path, devnet.network_file, chain.block_number() - 1)
    node.state.save_beat(epoch, signature)
    nonce = chain.w3.eth.get_transaction_count(node.address)
    node.poll_once()
    assert [c[0] for c in node.state.open_challenges()] == [challenge_id]
    node.heartbeats.answers.answer(uptime.current_epoch())   # before the moment: nothing
    # the validator's batch: both providers' beats (it holds them: it receipted them)
    other = devnet_account(OTHER)
    other_beat = liveness.sign_beat(other, network.chain_id, uptime.address, epoch,
                                    uptime.seed(epoch))
    Uptime(Chain(network, devnet_account(VALIDATOR))).answer_challenge(
        challenge_id, [node.address, other.address],
        [bytes.fromhex(signature[2:]), bytes.fromhex(other_beat[2:])])
    assert uptime.challenge(challenge_id)["state"] == liveness.CHALLENGE_ANSWERED
    current = to_moment(uptime, epoch)
    node.poll_once()
    node.heartbeats.answers.answer(current)
    assert node.state.challenge_outcome(challenge_id) == "answered-by-another"
    assert chain.w3.eth.get_transaction_count(node.address) == nonce
    assert "inclusion-challenge-answered-by-another" in log.getvalue()
    node.shutdown()
