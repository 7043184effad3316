"""Review 3 (outside, adversarial) of issue 15's answer window and the validator's pipelined
answers: is the window DeployParams sizes (protocol.liveness.answer_epochs_for, from
chain/network_deploy.chain_blocks) one the validator that actually answers
(validator/liveness_answers.py, group_batches) can fill?

The adversary throughout: a griefer (or a colleague of the challenged validator) that names a
whole largest report (MAX_LIVENESS_WORDS words: 131,072 providers) in the last block of the
challenge window, so that only the `answer_epochs` answer-only epochs are left, and profits
from every beat left unshown (a slash per provider, saturating at the stake)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry
from tests.validator import test_liveness_pipeline as pipeline
from tests.validator.test_registry_indices import address

from tessera.chain import network_deploy
from tessera.errors import ChainError
from tessera.protocol import liveness
from tessera.validator import liveness_answers
from tessera.validator.liveness_answers import ChallengeAnswers
from tessera.validator.registry_indices import RegistryIndices

world, challenged = pipeline.world, pipeline.challenged   # the pipeline tests' anvil fixtures
MAX_REPORT = liveness.MAX_LIVENESS_WORDS * liveness.WORD_BITS   # 131,072 providers
MAX_ANSWERS = 64                                                # Uptime.MAX_ANSWERS


def answers_for(block_gas_limit: int) -> ChallengeAnswers:
    """The validator's answerer on a chain of this block gas limit (no chain needed: only
    group_batches is asked, which reads the gas limit and MAX_ANSWERS once)."""
    duty = SimpleNamespace(chain=SimpleNamespace(block_gas_limit=lambda: block_gas_limit),
                           uptime=SimpleNamespace(max_answers=lambda: MAX_ANSWERS))
    return ChallengeAnswers(duty, CollectorRegistry())


@pytest.mark.parametrize(("epoch_s", "gas_limit", "block_s"), [
    pytest.param(600, 30_000_000, 12, id="L1-10min-epochs"),
    pytest.param(600, 45_000_000, 12, id="L1-45M-gas-10min-epochs"),
    pytest.param(60, 150_000_000, 2, id="fast-L2-1min-epochs"),
    pytest.param(3600, 30_000_000, 12, id="L1-1h-epochs"),
])
def test_the_validator_alone_fills_the_window_it_is_sized_for(epoch_s, gas_limit, block_s):
    """The property the sizing promises (docs/uptime.md, "The answer window"): a challenge
    naming a whole largest report in the last block of its window is answered in full by the
    reported validator alone within the answer-only epochs, at ONE group every
    BLOCKS_PER_GROUP blocks (a group is sent only after the previous group's receipts).

    FIXED (review 3, finding 1): the window was sized to half the chain's gas at 17,000 gas a
    beat, while the validator sends whole batches, at most 16 a group: on an L1 (30 M gas,
    12 s, 10-minute epochs) 3 epochs held 132,300 beats in the model but 124,800 as sent; at
    45 M-gas blocks 102,400; on a chain of big fast blocks a fifth. The window is now sized
    from the validator's own rate (protocol.liveness.answer_batches_per_group, which
    group_batches uses too), block by block, with one group every two blocks."""
    answer_epochs = liveness.answer_epochs_for(epoch_s, gas_limit, block_s * 1000)
    blocks = answer_epochs * epoch_s // block_s
    per_group = answers_for(gas_limit).group_batches() * MAX_ANSWERS
    assert per_group * (blocks // liveness.BLOCKS_PER_GROUP) >= MAX_REPORT


class FakeEth:
    def __init__(self, blocks: dict[int, dict], latest: int):
        self.blocks, self.latest = blocks, latest

    def get_block(self, which):
        return self.blocks[self.latest if which == "latest" else which]


def header_chain(gas_limit: int, block_s: float, latest: int) -> SimpleNamespace:
    """A w3 whose blocks 0..latest come every `block_s` seconds with this header gas limit."""
    blocks = {n: {"number": n, "gasLimit": gas_limit, "timestamp": 1_700_000_000 + int(n * block_s)}
              for n in range(max(0, latest - 64), latest + 1)}
    return SimpleNamespace(eth=FakeEth(blocks, latest))


def test_the_window_is_never_sized_above_what_the_chain_can_carry():
    """Property: `tessera network deploy` never sizes the answer window shorter than the
    chain's real rate needs (the unsafe direction). FIXED (review 3, finding 2): the rate was
    the latest header's gasLimit over the mean block time, 1 block a second at genesis. On
    Arbitrum every header says 2^50 while its sequencer carries ~7 M gas a second, and a 12 s
    chain at genesis read 12 x too fast: 1 answer epoch where 2 or 3 are needed. Now a header
    gas limit past MAX_PLAUSIBLE_BLOCK_GAS is refused, and so is a chain too young to measure
    (fewer than BLOCK_TIME_SAMPLE blocks), each naming the flag that says it instead
    (--block-gas-limit, --block-seconds), and what the flags say is what is sized to."""
    arbitrum = header_chain(1 << 50, 0.25, 300_000_000)
    with pytest.raises(ChainError, match="pass --block-gas-limit"):
        network_deploy.chain_blocks(arbitrum, "http://rpc.example")
    assert network_deploy.chain_blocks(arbitrum, "http://rpc.example", 1_750_000, 0.25) == \
        (1_750_000, 250)                        # 7 M gas a second, as told
    genesis = header_chain(30_000_000, 12, 0)
    with pytest.raises(ChainError, match="too few to measure its block time"):
        network_deploy.chain_blocks(genesis, "http://rpc.example")
    assert network_deploy.chain_blocks(genesis, "http://rpc.example", None, 12) == \
        (30_000_000, 12_000)
    measured = header_chain(30_000_000, 12, 1_000)
    assert network_deploy.chain_blocks(measured, "http://rpc.example") == (30_000_000, 12_000)
    for gas, seconds in ((0, None), (None, 0), (None, 3601)):
        with pytest.raises(ValueError, match="must be"):
            network_deploy.chain_blocks(measured, "http://rpc.example", gas, seconds)


def test_a_reorged_registration_does_not_leave_a_stale_index():
    """Property: after a reorg re-orders registrations, the shared cache gives each provider
    the index the registry now gives it. FIXED (review 3, finding 4): with `confirmations`
    > 0 every index is read that many blocks below the head, so the cache only ever holds
    indices no reorg the node allows for can change; a registration still above that depth
    reads as unregistered (its beats refused, its heartbeats on chain) until it is deep enough.

    Adversary: a griefer that sees provider P's registration in a block that a reorg drops
    (L1 one-block reorgs happen; on a rollup, a sequencer reorg) gets its own registration Q
    mined before P's in the replacement chain. A validator that cached P at index i, now Q's,
    receipted P's beats into bit i (Q counted live without a beat), could not answer for bit
    i (Uptime refuses P's beat there: "provider not named") and was slashed every epoch until
    it restarted."""
    registry = DepthRegistry([address(1), address(2), address(3)])
    indices = RegistryIndices(registry, confirmations=12, head=lambda: 100)
    victim, griefer = address(10), address(11)
    registry.head.append(victim)                      # P registered, 0 blocks deep
    assert indices.index_of(victim) is None           # not trusted yet: its beat is refused
    assert registry.depths == {88}                    # read 12 below the head, never at it
    registry.head[3:] = [griefer, victim]             # the reorg: Q at 3, P at 4
    registry.confirmed = list(registry.head)          # ... and both deep enough now
    assert indices.index_of(victim) == registry.head.index(victim) == 4
    assert indices.provider_at(3) == griefer


class DepthRegistry:
    """ProviderRegistry's views at a block: `confirmed` below the head's last 12 blocks, `head`
    at it (a reorg may still change the part of `head` past `confirmed`)."""

    def __init__(self, providers: list[str]):
        self.confirmed, self.head, self.depths = list(providers), list(providers), set()

    def _at(self, block) -> list[str]:
        self.depths.add(block)
        return self.head if block == "latest" else self.confirmed

    def provider_count(self, block="latest") -> int:
        return len(self._at(block))

    def provider_at(self, index: int, block="latest") -> str:
        return self._at(block)[index]

    def is_registered(self, provider: str, block="latest") -> bool:
        return provider in self._at(block)

    def index_of(self, provider: str, block="latest") -> int:
        listed = self._at(block)
        return listed.index(provider) if provider in listed else 0



def test_a_concurrent_send_failing_mid_group_leaves_no_stuck_nonce(world, challenged,
                                                                    monkeypatch):
    """Failed attack: the validator's other duties (an outage report, a watch challenge) send
    from another thread on the same account while a group is in flight, and that send takes a
    nonce between two batches of the group and then fails before the node has it (Chain.send
    resets the nonce), leaving a gap behind the group's later batches. Hoped for: the later
    batches (and every later transaction of the account) wait behind the gap until the window
    ends. What happens: Chain._take_nonce reads the node's pending count on every send, which
    stops at the gap, so the group's next batch fills it; everything sent is mined and the
    challenge is answered in the scan."""
    _, _, chain = world
    duty, _, cid, _ = challenged
    monkeypatch.setattr(liveness_answers, "PIPELINE_BATCHES", 4)
    given = pipeline.sends(duty, monkeypatch)
    send = duty.uptime.answer_challenge

    def another_thread_interleaves(cid_, providers, signatures, wait=True):
        out = send(cid_, providers, signatures, wait=wait)
        if len(given) == 1:
            chain._take_nonce()          # the other thread takes the next nonce ...
        elif len(given) == 2:
            chain._reset_nonce()         # ... and its send fails: that nonce is never sent
        return out

    monkeypatch.setattr(duty.uptime, "answer_challenge", another_thread_interleaves)
    pipeline.answer(duty)
    assert pipeline.nonce(chain) == pipeline.nonce(chain, "pending")   # nothing left stuck
    assert duty.uptime.challenge(cid)["state"] == liveness.CHALLENGE_ANSWERED


def test_a_group_in_one_block_settles_the_challenge_with_its_last_batch(world, challenged,
                                                                        monkeypatch):
    """Failed attack: every batch of a group is estimated before the earlier ones are mined,
    so the batch that completes the challenge (and pays the rest of the bond back to the
    challenger: a token transfer and the state's writes) is estimated as one that does not.
    Hoped for: it runs out of gas on chain, so that a challenge named in the last block of its
    window is left open for a scan the window has no time for. What happens: the gas limit
    is the estimate x 1.25 + GAS_MARGIN (150,000), and the settling costs far less than the
    margin: the whole group lands in one block, the last batch settles it."""
    from tessera.chain.client import GAS_MARGIN

    _, _, chain = world
    duty, _, cid, _ = challenged
    monkeypatch.setattr(liveness_answers, "PIPELINE_BATCHES", 4)
    given = pipeline.sends(duty, monkeypatch)
    pipeline.answer(duty)
    receipts = [chain.w3.eth.get_transaction_receipt(h) for _, h in given]
    assert [r["status"] for r in receipts] == [1, 1, 1, 1]
    assert len({r["blockNumber"] for r in receipts}) == 1
    settling = receipts[3]["gasUsed"] - receipts[2]["gasUsed"]   # the same word's rewrite
    limit = chain.w3.eth.get_transaction(given[3][1])["gas"]
    assert 0 < settling < GAS_MARGIN // 2 and limit - receipts[3]["gasUsed"] > GAS_MARGIN // 2, \
        (settling, limit, receipts[3]["gasUsed"])
    assert duty.uptime.challenge(cid)["state"] == liveness.CHALLENGE_ANSWERED


def test_a_receipt_timeout_does_not_resend_beats_still_pending(world, challenged,
                                                                 monkeypatch):
    """Property: a beat the validator has in one of its own pending transactions is not sent
    again by the next scan. FIXED (review 3, finding 3): the batches not mined within
    RECEIPT_TIMEOUT_S are kept (liveness_answers._pending) and looked at again first by the
    next scan; their beats are left out of its groups. (Replacing a stuck answer with a higher
    fee at the same nonce is not done.)

    Adversary: a griefer (or plain congestion) that keeps the validator's answers out of
    blocks for RECEIPT_TIMEOUT_S (60 s: 5 L1 blocks; e.g. by pushing the base fee past the 2x
    maxFee web3 set at send time). `Chain.wait_for` raises ChainError ("not mined within"),
    which `_send_group`'s receipt loop does not catch (only TxRefused): the other receipts are
    not read and the scan ends. The next scan reads the proven words, which do not show the
    pending batches, and sends every one of their beats again on later nonces, behind the
    stuck ones (no fee bump: nothing ever replaces them). When the stuck batches land, the
    copies revert ("every beat given was shown already") after doing their work (each beat
    skipped still costs Uptime's registry and word reads): the validator's gas for nothing,
    and each such scan doubles the block space the validator asks for while the window runs
    out. Here: batches of one, groups of two; the first scan's two are not mined in time, the
    next scan sends six (two of them copies, reverted).
    Fix: keep the hashes of a challenge's unconfirmed batches and wait on (or replace with a
    higher fee, same nonce) those before cutting new groups from their beats."""
    _, _, chain = world
    duty, log, cid, _ = challenged
    monkeypatch.setattr(liveness_answers, "PIPELINE_BATCHES", 2)
    given = pipeline.sends(duty, monkeypatch)
    mining_wait_for = pipeline.congested(chain, monkeypatch)
    pipeline.answer(duty)                          # two batches sent, neither mined in time
    assert len(given) == 2 and "not mined within" in log.getvalue()
    monkeypatch.setattr(chain, "wait_for", mining_wait_for)
    pipeline.answer(duty)                          # the congestion is over: the next scan
    assert duty.uptime.challenge(cid)["state"] == liveness.CHALLENGE_ANSWERED
    statuses = [chain.w3.eth.get_transaction_receipt(h)["status"] for _, h in given]
    assert len(given) == 4, f"{len(given)} batches sent for 4 beats: statuses {statuses}"
