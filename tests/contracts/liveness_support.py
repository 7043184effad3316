"""Shared helpers for Uptime's liveness tests (test_liveness.py: reports, receipt claims, outages;
test_liveness_challenges.py: inclusion challenges and their bonds): three validators, a funded
challenger, and a `Net` that moves time, opens epochs, signs beats and receipts with
tessera.protocol.liveness and reads every piece of state a liveness call may change."""

from __future__ import annotations

from dataclasses import dataclass

import boa
from contracts_support import (
    ANSWER_EPOCHS,
    EPOCH,
    MIN_STAKE,
    REPORT_DELAY,
    TSTK,
    key_account,
    set_history,
    uptime_args,
)

from tessera.protocol import liveness

VALS = [key_account(700 + i) for i in range(3)]
CHALLENGER = key_account(710)
V_STAKE = 200 * TSTK
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
OPEN, ANSWERED, RESOLVED = 1, 2, 3
E = 2  # the epoch most tests report on
SHORTEST_UNBONDING = (REPORT_DELAY + ANSWER_EPOCHS + 3) * EPOCH   # Uptime's constructor check


@dataclass
class Net:
    system: object
    uptime: object
    vals: object      # the Validators contract
    stake: object

    def at(self, epoch: int) -> None:
        """Move time a little into `epoch` (never backwards; staying in it is fine)."""
        t = self.uptime.epoch_start(epoch) + 1
        if self.uptime.current_epoch() == epoch:
            return
        assert t >= boa.env.timestamp
        boa.env.time_travel(seconds=t - boa.env.timestamp, block_delta=2)

    def open(self) -> bytes:
        set_history()  # py-evm's block hashes are zero until set: the seed must not be
        return self.uptime.open_epoch()

    def beat(self, acct, epoch: int, chain_id: int | None = None, uptime: str | None = None):
        return bytes.fromhex(liveness.sign_beat(
            acct, chain_id or self.system.chain_id, uptime or self.uptime.address, epoch,
            self.uptime.seed(epoch))[2:])

    def receipt(self, validator, provider: str, epoch: int, chain_id: int | None = None):
        return bytes.fromhex(liveness.sign_receipt(
            validator, chain_id or self.system.chain_id, self.uptime.address, provider, epoch)[2:])

    def report(self, validator, epoch: int, words: list[int]) -> None:
        with boa.env.prank(validator.address):
            self.uptime.report_liveness(epoch, words)

    def named(self, providers) -> list[int]:
        """The bitmap naming `providers` (accounts), as challenge_inclusions takes it."""
        reg = self.system.registry
        return liveness.words_of([reg.index_of(p.address) for p in providers], reg.provider_count())

    def challenge(self, validator, epoch: int, providers, words, by=CHALLENGER) -> int:
        """Challenge `validator`'s report `words` on `epoch`, naming `providers` (accounts)."""
        with boa.env.prank(by.address):
            return self.uptime.challenge_inclusions(validator.address, epoch, words,
                                                    self.named(providers))

    def answer(self, cid: int, providers, epoch: int = E, by=None):
        """Show `providers`' own beats of `epoch` on challenge `cid` (sent by `by`, an account
        or address; boa's default sender if None)."""
        sender = getattr(by, "address", by) or boa.env.eoa
        return self.uptime.answer_challenge(cid, [p.address for p in providers],
                                            [self.beat(p, epoch) for p in providers], sender=sender)

    def state(self, epoch: int = E) -> tuple:
        """Everything a liveness call may change (for 'a refused call changes nothing')."""
        u, vs = self.uptime, [v.address for v in VALS]
        return (u.live_word(epoch, 0), [u.report_hash(v, epoch) for v in vs],
                [u.beats(p.address, epoch) for p in self.system.providers], u.challenge_count(),
                [u.challenges(i) for i in range(1, u.challenge_count() + 1)],
                [self.stake.balanceOf(a) for a in (u.address, CHALLENGER.address, *vs)],
                [self.vals.stake_of(v) for v in vs],
                u.seed(epoch))


def setup_net(system, vals=None, uptime=None) -> Net:
    """Three validators of 200 TSTK, a funded challenger, epoch E open (time in E)."""
    vals, uptime = vals or system.validators, uptime or system.uptime
    for v in VALS:
        system.stake.mint(v.address, V_STAKE)
        with boa.env.prank(v.address):
            system.stake.approve(vals.address, 2**256 - 1)
            vals.register(V_STAKE)
    system.stake.mint(CHALLENGER.address, 1_000 * TSTK)
    with boa.env.prank(CHALLENGER.address):
        system.stake.approve(uptime.address, 2**256 - 1)
    net = Net(system, uptime, vals, system.stake)
    net.at(E)
    net.open()
    return net


def refused(net: Net, message: str | None, call, epoch: int = E) -> None:
    before = net.state(epoch)
    with boa.reverts(message) if message else boa.reverts():
        call()
    assert net.state(epoch) == before


def lying_report(net: Net):
    """VALS[0] names providers 0..3 in epoch E; only providers 0 and 1 signed beats."""
    net.at(E + 1)
    words = liveness.words_of(range(4), 4)
    net.report(VALS[0], E, words)
    return words


def validators_with_short_unbonding(system, factories, deployer: int = 720) -> tuple:
    """A Validators whose unbonding period is the shortest Uptime takes ((report_delay +
    answer_epochs + 3) epochs: a challenge does not lock the stake, so it must still be there
    when the challenge can be resolved), and an Uptime on it (holding its slasher role)."""
    owner = key_account(deployer).address
    with boa.env.prank(owner):
        vals = factories["Validators"].deploy(system.stake.address, MIN_STAKE, SHORTEST_UNBONDING)
        uptime = factories["Uptime"].deploy(*uptime_args(system.registry.address, vals.address))
    vals.set_slasher(uptime.address, True, sender=owner)
    return vals, uptime


def unbonding_liar(system, factories) -> tuple[Net, list[int]]:
    """A net on a Validators of the shortest unbonding (validators_with_short_unbonding) where
    VALS[0] has made its lying report and at once asked to unbond its whole stake (the liar
    trying to leave before the slash); the report's words."""
    vals, uptime = validators_with_short_unbonding(system, factories)
    net = setup_net(system, vals, uptime)
    words = lying_report(net)
    with boa.env.prank(VALS[0].address):
        vals.request_unbond(V_STAKE)
    return net, words
