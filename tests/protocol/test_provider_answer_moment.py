"""protocol/liveness.py: the moment a provider answers a challenge of its own inclusion
(`provider_answer_from`: the second half of the answer-only epochs; the daemon's side is
tests/provider/test_inclusion_answer_timing.py). Pure rules, no chain.

Adversary: a griefer that challenges in the LAST second of the challenge window, hoping to
leave the provider less than its half (or the validators none of theirs); a restart between
seeing the challenge and the moment, hoping to move it. The moment depends only on the epoch
and Uptime's immutables, so neither moves it."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from tessera.protocol import liveness


def test_the_devnet_moment_is_the_middle_of_the_answer_epoch():
    # report_delay 1, answer_epochs 1, 60 s epochs from 1,000: epoch 7's challenges come until
    # the end of epoch 9, its answers until the end of epoch 10; the provider's from mid-10.
    assert liveness.epoch_start(10, 1_000, 60) == 1_600
    assert liveness.provider_answer_from(7, 1, 1, 1_000, 60) == 1_630
    # two answer epochs: the second half is the whole of the last one
    assert liveness.provider_answer_from(7, 1, 2, 1_000, 60) == liveness.epoch_start(11, 1_000, 60)
    # odd seconds: the provider's half is rounded down, the validators' up
    assert liveness.provider_answer_from(7, 1, 1, 0, 61) == 11 * 61 - 30


@given(epoch=st.integers(0, 10**6), report_delay=st.integers(1, 20),
       answer_epochs=st.integers(1, 20), genesis=st.integers(0, 2**40),
       length=st.integers(2, 10**5))
def test_the_moment_splits_the_answer_only_time_whatever_the_challenge(
        epoch, report_delay, answer_epochs, genesis, length):
    moment = liveness.provider_answer_from(epoch, report_delay, answer_epochs, genesis, length)
    # the answer-only part: after the last second a challenge is accepted in, to the window's end
    last_challenge = liveness.epoch_start(
        liveness.last_challenge_epoch(epoch, report_delay) + 1, genesis, length) - 1
    window_end = liveness.epoch_start(
        liveness.answer_end(epoch, report_delay, answer_epochs) + 1, genesis, length)
    half = answer_epochs * length // 2
    # a challenge in the last second of its window still leaves the provider its half ...
    assert window_end - moment == half >= length // 2 >= 1
    # ... and the validators theirs, all of it after any challenge could come
    assert moment - (last_challenge + 1) == answer_epochs * length - half >= half
    # an answer sent at the moment lands in an epoch answers are accepted in
    moment_epoch = (moment - genesis) // length
    assert liveness.last_challenge_epoch(epoch, report_delay) < moment_epoch
    assert not liveness.is_final(epoch, moment_epoch, report_delay, answer_epochs)
    # from the chain's immutables only: the same after any restart
    assert moment == liveness.provider_answer_from(epoch, report_delay, answer_epochs, genesis,
                                                   length)
