"""When the provider answers a challenge of its own inclusion (provider/inclusion_answers.py,
issue 15): the validators first, at once and in batches of 64 that the answer fee pays for;
the node only from `protocol.liveness.provider_answer_from` (the second half of the
answer-only epochs), and only if its beat is still unshown. In process: the fake chain and the
real state DB of tests/provider/test_beat_sender.py. The same on anvil, with the griefer's
challenge answered by the validator: tests/provider/test_watcher_reorg.py.

Devnet rules here (report_delay 1, answer_epochs 1, 60 s epochs from 0): a challenge of epoch
7 comes in epochs 8-9, is answered until the end of epoch 10; the node's moment is 630 s.

Adversary strategies, each tested below:
- A griefer names an honest report's inclusions, hoping each provider pays a lone answer
  (3-5 answer fees of gas): before the moment the node sends nothing and reads nothing; the
  validator's batch shows its beat meanwhile, so at the moment the node reads once and sends
  nothing (`answered-by-another`).
- The same griefer times its challenge just before the node's last receipt-claim check, so
  that the node finds its live bit gone (disputed, not yet shown) and pays a `claim_beat`:
  the node claims nothing for a challenged inclusion it is answering.
- A challenge in the last second of the challenge window: the moment is fixed by the epochs,
  so the node still has half the answer-only time, and its answer lands in time.
- A restart between the challenge and the moment: the moment comes from Uptime's immutables
  and the challenge from the state DB; the node answers at the same moment. A quiet chain
  (no block since the challenge) or a restart on it: the head's age and the wall clock count,
  and every clock error makes the node answer earlier, not later.
- A validator that answers only in the second half (to make its providers pay): the node
  answers at the moment and keeps its epoch; the validator saved a batch whose gas the fees
  would have paid back, nothing more (docstring of inclusion_answers.py)."""

from __future__ import annotations

from tests.provider.test_beat_sender import (
    CHAIN_ID,
    EPOCH_LENGTH,
    INDEX,
    SEED,
    UPTIME,
    FakeUptime,
    at,
    challenged,
    node_beats,
    node_context,
)

from tessera.protocol import liveness

MOMENT = liveness.provider_answer_from(7, 1, 1, 0, EPOCH_LENGTH)
CHALLENGE_END = liveness.epoch_start(liveness.last_challenge_epoch(7, 1) + 1, 0, EPOCH_LENGTH)
WINDOW_END = liveness.epoch_start(liveness.answer_end(7, 1, 1) + 1, 0, EPOCH_LENGTH)


class CountingUptime(FakeUptime):
    """A FakeUptime that counts the node's reads of challenges and proven words."""

    def __init__(self):
        super().__init__()
        self.reads = 0
        self.state = liveness.CHALLENGE_OPEN

    def challenge(self, challenge_id):
        self.reads += 1
        return {"state": self.state}

    def proven_word(self, epoch, index):
        self.reads += 1
        return self.proven


def node(tmp_path, account=None):
    """A node that beat (receipted) in epoch 7, with a counting chain."""
    ctx = node_context(tmp_path, [], account=account)
    ctx.uptime = CountingUptime()
    if account is None:
        ctx.state.save_beat(7, liveness.sign_beat(ctx.account, CHAIN_ID, UPTIME, 7, SEED))
        ctx.state.set_beat(7, how="receipts")
        ctx.state.add_receipt(7, "0x" + "33" * 20, "0x" + "ab" * 65)
    return ctx, node_beats(ctx)


def epoch(second: int) -> int:
    return second // EPOCH_LENGTH


def test_the_moment_is_the_second_half_of_the_answer_only_epochs():
    assert (CHALLENGE_END, MOMENT, WINDOW_END) == (600, 630, 660)


def test_before_the_moment_the_node_sends_and_reads_nothing(tmp_path):
    ctx, beats = node(tmp_path)
    beats.on_challenged(challenged(3, [0, INDEX], 7, answer_by=10))
    for second in (8 * 60, CHALLENGE_END - 1, CHALLENGE_END, MOMENT - 1):
        beats.answers.answer(epoch(second), at(second))
    assert ctx.uptime.sent == [] and ctx.uptime.reads == 0
    assert [c[0] for c in ctx.state.open_challenges()] == [3]
    assert ctx.log.named("inclusion-challenged")[0]["answer_from"] == MOMENT
    beats.answers.answer(epoch(MOMENT), at(MOMENT))   # unshown at the moment: answered
    assert [s[:2] for s in ctx.uptime.sent] == [("answer_challenge", 3)]
    assert ctx.state.challenge_outcome(3) == "answered"


def test_the_validators_first_half_answer_costs_the_node_no_transaction(tmp_path):
    ctx, beats = node(tmp_path)
    beats.on_challenged(challenged(3, [0, INDEX], 7, answer_by=10))
    beats.answers.answer(9, at(CHALLENGE_END - 1))
    ctx.uptime.state = liveness.CHALLENGE_ANSWERED      # the validator's batch showed them all
    ctx.uptime.proven = 1 << (INDEX - 256)
    beats.answers.answer(epoch(MOMENT), at(MOMENT))
    assert ctx.uptime.sent == [] and ctx.uptime.reads == 1   # one read, at the moment
    assert ctx.state.challenge_outcome(3) == "answered-by-another"
    # shown on another challenge of the epoch (this one still open): the same
    beats.on_challenged(challenged(4, [INDEX], 7, answer_by=10))
    ctx.uptime.state = liveness.CHALLENGE_OPEN
    beats.answers.answer(epoch(MOMENT), at(MOMENT + 5))
    assert ctx.uptime.sent == [] and ctx.state.challenge_outcome(4) == "answered-by-another"


def test_a_challenge_in_the_last_second_of_its_window_still_gets_the_nodes_half(tmp_path):
    ctx, beats = node(tmp_path)
    beats.answers.answer(9, at(CHALLENGE_END - 1))          # the head before the challenge
    beats.on_challenged(challenged(3, [INDEX], 7, answer_by=10))   # mined at 599
    beats.answers.answer(9, at(CHALLENGE_END - 1))
    beats.answers.answer(10, at(MOMENT - 1))
    assert ctx.uptime.sent == []
    beats.answers.answer(10, at(WINDOW_END - 1))            # late in the half: still in time
    assert [s[:2] for s in ctx.uptime.sent] == [("answer_challenge", 3)]
    # past the window (the node was down for the whole half): too late, nothing sent
    beats.on_challenged(challenged(4, [INDEX], 7, answer_by=10))
    beats.answers.answer(11, at(WINDOW_END))
    assert len(ctx.uptime.sent) == 1 and ctx.state.challenge_outcome(4) == "too-late"


def test_a_restart_before_the_moment_answers_at_the_same_moment(tmp_path):
    ctx, beats = node(tmp_path)
    beats.on_challenged(challenged(3, [INDEX], 7, answer_by=10))
    beats.answers.answer(9, at(CHALLENGE_END - 10))
    ctx.state.close()
    ctx, beats = node(tmp_path, account=ctx.account)          # the restart
    beats.answers.answer(10, at(MOMENT - 1))
    assert ctx.uptime.sent == [] and ctx.uptime.reads == 0
    beats.answers.answer(10, at(MOMENT))
    assert [s[:2] for s in ctx.uptime.sent] == [("answer_challenge", 3)]


def test_on_a_quiet_chain_the_heads_age_and_the_wall_clock_count(tmp_path):
    """No block since the challenge (a chain that mines only with transactions): the head's
    timestamp plus the time since the node first saw it; after a restart on such a chain the
    head is new to the process, so the wall clock is what says the moment has come."""
    ctx, beats = node(tmp_path)
    answers = beats.answers
    head = at(CHALLENGE_END + 1)
    assert answers.chain_time(head, 100.0) == CHALLENGE_END + 1
    assert answers.chain_time(head, 129.5) == CHALLENGE_END + 30.5   # the same head, 29.5 s on
    assert answers.chain_time(at(CHALLENGE_END + 2), 130.0) == CHALLENGE_END + 2   # a new head
    beats.on_challenged(challenged(3, [INDEX], 7, answer_by=10))
    answers.answer(10, at(CHALLENGE_END + 3))                # a head new to the process
    assert ctx.uptime.sent == []
    answers.wall = lambda: float(MOMENT + 3)                  # the wall clock past the moment
    assert answers.chain_time(at(CHALLENGE_END + 4), 131.0) == MOMENT + 3
    answers.answer(10, at(CHALLENGE_END + 5))
    assert [s[:2] for s in ctx.uptime.sent] == [("answer_challenge", 3)]


def test_a_challenged_inclusion_being_answered_is_not_claimed(tmp_path):
    """The griefer's challenge lands just before the node's last receipt-claim check (the start
    of epoch 9), before the validator's batch: the live bit is gone, but the node holds its
    beat and a kept challenge, so it claims nothing; the answer brings the bit back. Without a
    kept challenge a gone bit is still claimed (test_beat_sender.py)."""
    ctx, beats = node(tmp_path)
    beats.answers.index = INDEX
    ctx.uptime.live = 0                                      # disputed, not yet shown
    beats.on_challenged(challenged(3, [INDEX], 7, answer_by=10))
    assert beats.answers.answering(7) and not beats.answers.answering(6)
    beats._claims(9)                                         # the last claim check
    beats._claims(10)                                        # the claim window is over
    assert ctx.uptime.sent == [] and ctx.state.beat(7)[2] == "named"
    ctx.uptime.proven = ctx.uptime.live = 1 << (INDEX - 256)   # the validator's batch
    ctx.uptime.state = liveness.CHALLENGE_ANSWERED
    beats.answers.answer(10, at(MOMENT))
    assert ctx.uptime.sent == [] and not beats.answers.answering(7)


def test_a_challenge_not_yet_handed_over_is_not_taken_for_an_omission(tmp_path):
    """The race the e2e test met: the node's claim check runs between the challenge's block
    and the watcher handing the challenge over. The live bit is gone and the report is in,
    which looks like an omission; the chain's `challenged_word` of the receipting validator's
    report says it is a dispute, so nothing is claimed. An omission (bit gone, not
    challenged) is still claimed."""
    ctx, beats = node(tmp_path)
    beats.answers.index = INDEX
    ctx.uptime.live = 0
    ctx.uptime.challenged = 1 << (INDEX - 256)               # on chain, not yet kept
    assert not beats.answers.answering(7) and beats.answers.disputed(7, ["0x" + "33" * 20])
    beats._check(7, 8, last=False)                           # a check 5 s into epoch 8
    beats._claims(9)                                         # the last claim check
    assert ctx.uptime.sent == [] and ctx.state.unsettled_beats() == [7]
    ctx.uptime.challenged = 0                                # an omission after all
    beats._check(7, 9, last=True)
    assert [s[:2] for s in ctx.uptime.sent] == [("claim_beat", 7)]


def test_a_validator_answering_only_in_the_second_half_does_not_outwait_the_node(tmp_path):
    """The validator waits for the providers to pay: at the moment the node answers (its epoch
    is safe), and a batch of the validator's landing first only makes the node's call refused
    as shown already, no fee and nothing more to do."""
    ctx, beats = node(tmp_path)
    beats.on_challenged(challenged(3, [INDEX], 7, answer_by=10))
    beats.answers.answer(10, at(MOMENT - 1))                 # the validator has not answered
    beats.answers.answer(10, at(MOMENT))
    assert [s[:2] for s in ctx.uptime.sent] == [("answer_challenge", 3)]
    assert ctx.state.challenge_outcome(3) == "answered"
    # its batch lands between the node's read and its send: refused, no fee, nothing to redo
    beats.on_challenged(challenged(4, [INDEX + 1, INDEX], 7, answer_by=10))
    ctx.uptime.refuse = "uptime: every beat given was shown already"
    beats.answers.answer(10, at(MOMENT + 1))
    assert ctx.state.challenge_outcome(4) == "answered-by-another"
    assert len(ctx.uptime.sent) == 1 and not ctx.state.open_challenges()
