"""How the validator's answers to an inclusion challenge are cut into groups of batches
(validator/liveness_answers.py `_next_group`): the epoch's proven words are read again before
each group (a reorg, a provider or another answerer may have shown beats meanwhile: the outside
review's finding G1, tests/contracts/test_liveness_attacks_2.py), and only the words that group
spans, not every word the challenge names. A group is up to PIPELINE_BATCHES disjoint batches
of MAX_ANSWERS, sent without waiting. The groups on a real chain:
tests/validator/test_liveness_pipeline.py (and test_liveness.py)."""

from __future__ import annotations

import types

from prometheus_client import CollectorRegistry

from tessera.protocol import liveness
from tessera.protocol.liveness import WORD_BITS
from tessera.validator import liveness_answers
from tessera.validator.liveness_answers import ChallengeAnswers

EPOCH = 7


class ProvenWords:
    """Uptime's proven_word, each read logged; `shown` the indices proven so far."""

    def __init__(self, shown=()):
        self.shown, self.reads = set(shown), []

    def proven_word(self, epoch: int, j: int) -> int:
        assert epoch == EPOCH
        self.reads.append(j)
        return sum(1 << (i % WORD_BITS) for i in self.shown if i // WORD_BITS == j)


def answers_on(uptime: ProvenWords, max_answers: int) -> ChallengeAnswers:
    answers = ChallengeAnswers(types.SimpleNamespace(uptime=uptime), CollectorRegistry())
    answers._max_answers = max_answers
    answers._fill = 10**6    # a block far larger than any group: PIPELINE_BATCHES decides
    return answers


def test_a_group_reads_only_the_proven_words_it_spans(monkeypatch):
    """A challenge naming three words' worth of providers, batches of 2, groups of 2 batches:
    the first group reads words 0 and 1, not word 2 (each read is an RPC call, made again
    before every group, and a challenge may name 512 words)."""
    monkeypatch.setattr(liveness_answers, "PIPELINE_BATCHES", 2)
    uptime = ProvenWords()
    todo = [1, 2, 3, WORD_BITS + 1, 2 * WORD_BITS, 2 * WORD_BITS + 1]
    group, rest = answers_on(uptime, 2)._next_group(EPOCH, todo)
    assert (group, rest, uptime.reads) == ([[1, 2], [3, WORD_BITS + 1]],
                                           [2 * WORD_BITS, 2 * WORD_BITS + 1], [0, 1])


def test_a_group_fills_half_a_block_and_no_more():
    """A group is as many full batches (64 beats at ANSWER_GAS_PER_BEAT, the model of the
    measured 16,772 gas, bench/results/liveness_challenge_gas.json) as fill
    ANSWER_GAS_SHARE_BPS of the block gas limit: the share of the chain the answer window is
    sized to (DeployParams), so the validator alone keeps up with it. On a 30 M-gas block that
    is 13 batches, about 13.9 M gas used (under the 15 M EIP-1559 target: a group fits one
    block beside everyone else's traffic), and a 10,000-provider report named in full (157
    batches) takes 13 groups; never more than a node's pending slots, never none."""
    def group(gas_limit: int) -> int:
        answers = ChallengeAnswers(types.SimpleNamespace(
            chain=types.SimpleNamespace(block_gas_limit=lambda: gas_limit)), CollectorRegistry())
        answers._max_answers = 64
        return answers.group_batches()

    assert group(30_000_000) == 13 and 13 * 64 * 16_743 <= 15_000_000
    assert -(-10_000 // 64) / group(30_000_000) <= 13
    assert (group(10_000_000), group(1_000_000), group(10**10)) == \
        (4, 1, liveness_answers.PIPELINE_BATCHES)
    per_batch = 64 * liveness.ANSWER_GAS_PER_BEAT
    for limit in (30_000_000, 20_000_000):   # a group within the share, one more batch past it
        n = group(limit)
        assert n * per_batch <= limit // 2 < (n + 1) * per_batch


def test_beats_shown_before_a_group_are_skipped_and_the_group_filled_past_them(monkeypatch):
    """Adversary (G1): a griefer names a whole honest report in the last block of the window,
    counting on the validator wasting its few blocks on beats the online providers showed
    meanwhile. Each group is cut from the words as read just before it: what was shown since
    the last group is skipped (dropped for good: a beat is shown once an epoch), and the
    group's batches are still full, taking the next unshown ones (reading the next word only
    then); a last batch may be short."""
    monkeypatch.setattr(liveness_answers, "PIPELINE_BATCHES", 2)
    uptime = ProvenWords()
    answers = answers_on(uptime, 1)
    todo = [1, 2, 3, 4, 5, WORD_BITS + 5]
    group, todo = answers._next_group(EPOCH, todo)
    assert group == [[1], [2]]
    uptime.shown |= {3, 4}                  # the providers answered meanwhile
    uptime.reads.clear()
    group, todo = answers._next_group(EPOCH, todo)
    assert (group, todo, uptime.reads) == ([[5], [WORD_BITS + 5]], [], [0, 1])
    assert answers._next_group(EPOCH, [3, 4]) == ([], [])   # all shown: nothing to send
    monkeypatch.setattr(liveness_answers, "PIPELINE_BATCHES", 3)
    assert answers_on(uptime, 2)._next_group(EPOCH, [1, 2, 5])[0] == [[1, 2], [5]]


def test_validators_start_at_different_places():
    """Review 3: every validator that reported the named providers answers the same challenge;
    in the same registry order, their groups showed the same beats first (the chain skips a
    beat shown already, unpaid: block space for nothing) instead of adding up. Each starts at
    a place of its own (its address modulo the list), round to the start: every beat still
    given once, in a different order."""
    todo = list(range(100))
    orders = []
    for address in ("0x" + "01" * 20, "0x" + "02" * 20, "0x" + "ff" * 20):
        order = liveness_answers.own_order(address, todo)
        assert sorted(order) == todo and order[0] == int(address, 16) % 100
        orders.append(order[0])
    assert len(set(orders)) == 3 and liveness_answers.own_order("0x" + "01" * 20, []) == []
