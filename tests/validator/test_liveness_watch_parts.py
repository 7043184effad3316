"""The watch splits a large report's challenge by registry words (liveness_watch_bonds
WORDS_PER_CHALLENGE, issue 15's F4): a challenge writes three storage words per registry word it
names (about 69,600 gas each, bench/results/liveness_challenge_gas.json), so a liar whose decoys
sit one per word beside a lie made the watcher's ONE challenge of its report cost more than a
30 M-gas block past ~425 words (~109,000 providers): refused at estimate, the lie unchallenged.
Each part (words [p*W, (p+1)*W)) is now its own challenge, kept, found again after a crash and
settled on its own.

Fakes for Uptime and the stake token (the contract's side is tested in
tests/contracts/test_liveness_challenges.py and the whole watch on anvil in
test_liveness_watch.py): here only the watch's bookkeeping of parts, at W = 1 word so that a
few hundred indices span several parts."""

from __future__ import annotations

import io
import types

import pytest
from prometheus_client import CollectorRegistry

from tessera.logs import EventLog
from tessera.protocol import liveness
from tessera.validator import liveness_watch_bonds
from tessera.validator.liveness_watch_bonds import WatchBonds, part_named, part_of
from tessera.validator.liveness_watch_store import WatchStore

EPOCH, BOND, WORD = 5, 10**19, liveness.WORD_BITS
LIAR, ME = "0x" + "11" * 20, "0x" + "aa" * 20


class FakeUptime:
    """What WatchBonds asks Uptime, with every challenge kept as its InclusionsChallenged."""

    address = "0x" + "0f" * 20

    def __init__(self):
        self.sent: list[dict] = []

    def liveness_rules(self):
        return 1, 1

    def challenge_rules(self):
        return BOND, 50 * 10**18

    def answer_fee(self):
        return BOND // 512

    def most_paid_per_beat(self):
        return BOND // 32

    def named_per_bond(self):
        return 32

    def epoch_length(self):
        return 3600

    def opened_block(self, epoch):
        return 0

    def challenged_word(self, validator, epoch, j):
        return 0

    def proven_word(self, epoch, j):
        return 0

    def challenge_bond_for(self, n):
        return BOND * -(-n // 32)

    def challenge_inclusions(self, validator, epoch, words, named):
        used = [j for j, w in enumerate(named) if w]
        assert len(used) <= liveness_watch_bonds.WORDS_PER_CHALLENGE, used   # one part each
        args = {"challenge_id": len(self.sent) + 1, "validator": validator, "epoch": epoch,
                "challenger": ME, "named": named, "bond": self.challenge_bond_for(
                    len(liveness.indices_of(named)))}
        self.sent.append(args)
        return {"transactionHash": b"\x01" * 32, "gasUsed": 1}, args["challenge_id"]

    def challenged_set(self, receipt):
        return self.sent[-1]

    def challenge(self, cid):
        args = self.sent[cid - 1]
        return {"challenger": args["challenger"], "epoch": args["epoch"],
                "validator": args["validator"], "state": liveness.CHALLENGE_OPEN}


class FakeToken:
    def balance_of(self, who):
        return 1000 * BOND

    def require_balance(self, amount, what):
        pass

    def allowance(self, owner, spender):
        return 10**30


@pytest.fixture
def bonds(tmp_path, monkeypatch):
    monkeypatch.setattr(liveness_watch_bonds, "WORDS_PER_CHALLENGE", 1)
    uptime = FakeUptime()
    monkeypatch.setattr(liveness_watch_bonds, "Uptime", lambda chain: uptime)
    monkeypatch.setattr(liveness_watch_bonds, "StakeToken", lambda chain: FakeToken())
    chain = types.SimpleNamespace(
        address=ME, network=types.SimpleNamespace(deploy_block=0),
        events=lambda contract, event, start, argument_filters: [
            {"args": a} for a in uptime.sent if a["validator"] == argument_filters["validator"]
            and a["epoch"] == argument_filters["epoch"]])
    made = WatchBonds(chain, WatchStore(tmp_path / "watch.db"), EventLog(io.StringIO()),
                      CollectorRegistry(), max_lost_per_day=100)
    made.prepare()
    return made


def test_a_report_over_several_parts_gets_one_challenge_per_part(bonds):
    """Unproven inclusions in words 0, 1 and 3 of one report: three challenges, each naming only
    its own word's (so each stays within one block), three rows; sent once each."""
    unproven = [3, 7, WORD + 1, 3 * WORD + 9]
    words = liveness.words_of(unproven, 4 * WORD)
    bonds.challenge_all(EPOCH, {LIAR: (words, unproven)}, "unproven")
    sent = bonds.uptime.sent
    assert sorted(liveness.indices_of(a["named"]) for a in sent) == \
        [[3, 7], [WORD + 1], [3 * WORD + 9]]                     # (in a random order)
    assert {p: bonds.store.challenge(EPOCH, LIAR, p)["status"] for p in (0, 1, 3)} == \
        dict.fromkeys((0, 1, 3), "open")
    assert bonds.store.challenge(EPOCH, LIAR, 2) is None
    bonds.challenge_all(EPOCH, {LIAR: (words, unproven)}, "unproven")   # all sent: nothing new
    assert len(sent) == 3


def test_a_part_sent_before_a_crash_is_found_again_as_that_part(bonds):
    """A crash between the 'sending' row and the receipt: the restarted watch finds the
    challenge on chain and files it under ITS part (from the named bitmap), not another's; the
    other part, never sent, is sent then."""
    unproven = [3, WORD + 1]
    words = liveness.words_of(unproven, 2 * WORD)
    bonds.uptime.challenge_inclusions(LIAR, EPOCH, words, liveness.words_of([WORD + 1], 2 * WORD))
    bonds.store.save_challenge(EPOCH, LIAR, "sending", named=[WORD + 1], bond=BOND, part=1)
    bonds.settle(EPOCH + 1)
    assert bonds.store.challenge(EPOCH, LIAR, 1)["challenge_id"] == 1
    assert bonds.store.challenge(EPOCH, LIAR, 0) is None
    bonds.challenge_all(EPOCH, {LIAR: (words, unproven)}, "unproven")
    assert [liveness.indices_of(a["named"]) for a in bonds.uptime.sent] == [[WORD + 1], [3]]
    assert bonds.store.challenge(EPOCH, LIAR, 0)["challenge_id"] == 2


def test_parts_at_the_default_size():
    """256 words a part (about 18 M gas at most): a report below 65,536 providers is one
    challenge, as before."""
    assert liveness_watch_bonds.WORDS_PER_CHALLENGE == 256
    assert part_of(65_535) == 0 and part_of(65_536) == 1
    assert part_named([0] * 300 + [1]) == 1 and part_named([0, 4]) == 0 and part_named([]) == 0
