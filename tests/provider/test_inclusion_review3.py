"""Review 3 (outside, adversarial) of the provider's answer moment (provider/inclusion_answers.py:
validators first, the node from protocol.liveness.provider_answer_from on). In process, with
the fake chain and real state DB of tests/provider/test_inclusion_answer_timing.py (devnet
rules: a challenge of epoch 7 is answered until 660 s; the node's moment is 630 s)."""

from __future__ import annotations

from tests.provider.test_beat_sender import INDEX, at, challenged
from tests.provider.test_inclusion_answer_timing import MOMENT, WINDOW_END, epoch, node


def test_a_challenge_handed_over_after_the_moment_is_answered_in_the_same_step(tmp_path):
    """Failed attack: a griefer challenges when the node's watcher is slow to hand the event
    over (its `confirmations` lag, a restart re-reading its last blocks, an RPC that serves
    logs late), hoping the node, having waited for the validators' half, finds the challenge
    only after its moment and then waits again, past the window. The moment is a time, not a
    delay from the handing over: a challenge kept after it is answered at the next step."""
    ctx, beats = node(tmp_path)
    beats.answers.answer(epoch(MOMENT + 20), at(MOMENT + 20))       # nothing kept yet
    beats.on_challenged(challenged(3, [INDEX], 7, answer_by=10))     # handed over late
    beats.answers.answer(epoch(MOMENT + 21), at(MOMENT + 21))
    assert [s[:2] for s in ctx.uptime.sent] == [("answer_challenge", 3)]
    assert MOMENT + 21 < WINDOW_END and ctx.state.challenge_outcome(3) == "answered"


def test_heads_alternating_between_two_stale_nodes_do_not_hold_the_moment_back(tmp_path):
    """Failed attack: the node's RPC is a load balancer over two nodes that both stopped
    following the chain (or a quiet chain that mines only with transactions, one node a block
    behind), so the head it is given alternates between two old heads. Each change of head
    restarts the age the node adds to a head's timestamp, so the heads alone never reach the
    moment; hoped for: the node never answers. The wall clock is the floor of the chain time:
    once it passes the moment, the node answers."""
    ctx, beats = node(tmp_path)
    answers = beats.answers
    beats.on_challenged(challenged(3, [INDEX], 7, answer_by=10))
    stale = [at(601), at(602)]
    for step in range(6):
        answers.answer(10, stale[step % 2])
    assert ctx.uptime.sent == []                          # the wall clock (0 here) is behind
    answers.wall = lambda: float(MOMENT + 1)              # the real time has come
    answers.answer(10, stale[0])
    assert [s[:2] for s in ctx.uptime.sent] == [("answer_challenge", 3)]
