"""Uptime figures from validators' liveness reports, receipt claims and inclusion challenges
naming sets of a report's providers (issue 15, session 25; protocol/uptime_book.py), on synthetic
logs: what Uptime.is_up says, with the epochs not yet final counted as pending, in the full fold
(FigureBook, with its evidence transactions) and in the compact one (ReliabilityBook) alike."""

from __future__ import annotations

import pytest

from tessera.protocol.events import EventRecord
from tessera.protocol.figures import compute_figures
from tessera.protocol.liveness import words_of
from tessera.protocol.reliability_book import ReliabilityBook
from tessera.protocol.uptime_book import CLAIM, DOWN, HEARTBEAT, PENDING, REPORT, REVOKED, UptimeLog

G = 1_767_225_600            # genesis: 2026-01-01 00:00:00 UTC
EPOCH = 3_600
DELAY, ANSWER = 1, 1         # an epoch is final 3 epochs after it ends (DeployParams' defaults)
LAG = DELAY + 1 + ANSWER
ALICE, BOB, CAROL = ("0x" + c * 40 for c in "abc")
V1, V2 = ("0x" + c * 40 for c in "12")
U = "uptime.by_provider"


class Chain:
    """Synthetic logs in chain order: one event per block, `at(epoch, second)` sets the time."""

    def __init__(self) -> None:
        self.events: list[EventRecord] = []
        self.ts = G
        self.emit("Uptime", "UptimeStarted", registry="0x" + "9" * 40, genesis=G, epoch_length=EPOCH,
                  jail_after=6, jail_period=3_600)
        self.emit("Uptime", "LivenessRulesSet", validators="0x" + "8" * 40, report_delay=DELAY,
                  answer_epochs=ANSWER, challenge_bond=10, inclusion_slash=50)

    def at(self, epoch: int, second: int = 10) -> Chain:
        self.ts = max(self.ts, G + epoch * EPOCH + second)
        return self

    def emit(self, contract: str, event: str, **args) -> str:
        n = len(self.events) + 1
        tx = f"0x{n:064x}"
        self.events.append(EventRecord(n, f"0x{n:064x}", self.ts, tx, 0, contract, event, args))
        return tx

    def register(self, *providers: str) -> None:
        for p in providers:
            self.emit("ProviderRegistry", "ProviderRegistered", provider=p, stake=100,
                      gpu_model="H100", gpu_count=1, gpu_memory_mb=1, benchmark_score=1,
                      endpoint="x", price_floor=1)

    def report(self, validator: str, epoch: int, *indices: int, count: int = 3) -> str:
        return self.emit("Uptime", "LivenessReported", validator=validator, epoch=epoch,
                         words_hash="0x00", words=words_of(indices, count) or [0])

    def challenge(self, cid: int, validator: str, epoch: int, *indices: int, count: int = 3) -> str:
        """Uptime.challenge_inclusions naming the registry `indices` of the report."""
        return self.emit("Uptime", "InclusionsChallenged", challenge_id=cid, validator=validator,
                         epoch=epoch, challenger=CAROL, named_count=len(indices),
                         bond=10, answer_by_epoch=epoch + LAG, named=words_of(indices, count))

    def answer(self, cid: int, validator: str, provider: str, epoch: int, by: str = V2) -> str:
        return self.emit("Uptime", "InclusionAnswered", challenge_id=cid, validator=validator,
                         provider=provider, epoch=epoch, answered_by=by, to_answerer=5)

    def resolved(self, cid: int, validator: str, epoch: int, unanswered: int) -> str:
        return self.emit("Uptime", "ChallengeResolved", challenge_id=cid, validator=validator,
                         epoch=epoch, unanswered=unanswered, slashed=50 * unanswered,
                         to_challenger=10 * unanswered, burned=40 * unanswered,
                         bond_returned=5)   # bond - paid, to the challenger either way


def figures(chain: Chain, epoch: int) -> dict:
    """{(name, provider): (value, txs)} of the uptime figures read in `epoch`; the compact book
    must give the same values."""
    as_of = G + epoch * EPOCH + EPOCH - 1
    full = {k: f for k, f in compute_figures(chain.events, as_of).items() if k[0].startswith(U)}
    compact = {k: v for k, v in ReliabilityBook(None).apply(chain.events).values(as_of).items()
               if k[0].startswith(U)}
    assert compact == {k: f.value for k, f in full.items()}
    return {k: (f.value, f.txs) for k, f in full.items()}


def parts(figs: dict, provider: str) -> dict[str, int]:
    return {name.removeprefix(f"{U}."): value for (name, key), (value, _) in figs.items()
            if key == provider}


def test_a_provider_reported_by_a_validator_counts_up_once_the_epoch_is_final():
    chain = Chain()
    chain.at(0).register(ALICE, BOB)
    chain.at(2)
    report = chain.report(V1, 1, 0)            # epoch 1: Alice (index 0), not Bob
    # In epoch 2, epochs 0 .. 2 are not final: pending, neither up nor down.
    assert parts(figures(chain, 2), ALICE) == {"epochs": 0, "up": 0, "heartbeats": 0, "claimed": 0,
                                                "reported": 0, "revoked": 0, "pending": 3}
    # In epoch 5, epochs 0 .. 1 are final (5 > 1 + LAG): Alice up in 1 (by the report), down in 0.
    figs = figures(chain, 5)
    assert parts(figs, ALICE) == {"epochs": 2, "up": 1, "heartbeats": 0, "claimed": 0, "reported": 1,
                                  "revoked": 0, "pending": 4, "bps": 5_000}
    assert figs[(f"{U}.reported", ALICE)][1] == figs[(f"{U}.up", ALICE)][1] == (report,)
    assert parts(figs, BOB)["up"] == 0 and parts(figs, BOB)["epochs"] == 2


def test_two_validators_reports_are_or_ed_and_both_are_evidence():
    chain = Chain()
    chain.at(0).register(ALICE, BOB, CAROL)
    chain.at(1)
    first = chain.report(V1, 0, 0, 1)          # Alice and Bob
    second = chain.report(V2, 0, 1, 2)         # Bob and Carol
    figs = figures(chain, 4)
    assert [parts(figs, p)["reported"] for p in (ALICE, BOB, CAROL)] == [1, 1, 1]
    assert figs[(f"{U}.up", ALICE)][1] == (first,)
    assert figs[(f"{U}.up", BOB)][1] == tuple(sorted((first, second)))
    assert figs[(f"{U}.up", CAROL)][1] == (second,)


def test_registry_indices_follow_registration_order_across_words():
    """Index = place among ProviderRegistered events in chain order (once per address): a second
    registration event of the same address takes no index; index 256 is bit 0 of words[1]."""
    fillers = [f"0x{i + 1:040x}" for i in range(256)]
    chain = Chain()
    chain.at(0).register(CAROL, *fillers[:255], ALICE)    # Alice: index 256
    chain.register(CAROL)                                  # no new index
    chain.register(BOB)                                    # Bob: index 257
    chain.at(1)
    report = chain.emit("Uptime", "LivenessReported", validator=V1, epoch=0, words_hash="0x00",
                        words=[1, 1 << 1])                # indices 0 and 257
    figs = figures(chain, 4)
    assert parts(figs, CAROL)["reported"] == 1 and parts(figs, BOB)["reported"] == 1
    assert parts(figs, ALICE)["reported"] == 0
    assert figs[(f"{U}.up", BOB)][1] == (report,)


def test_an_unanswered_challenge_revokes_the_report_at_finality():
    """One challenge names Alice and Bob; Bob's beat is shown, Alice's is not: Alice's reported
    bit is revoked once final, Bob's report stands."""
    chain = Chain()
    chain.at(0).register(ALICE, BOB)
    chain.at(1)
    chain.report(V1, 0, 0, 1)
    chain.at(2)
    disputed = chain.challenge(1, V1, 0, 0, 1)
    chain.answer(1, V1, BOB, 0)
    assert parts(figures(chain, 3), ALICE)["pending"] >= 1      # not final: neither up nor down
    # Final in epoch 4 with Alice unanswered: revoked at once, as Uptime.is_up says, whether or
    # not anyone has called resolve_challenge yet.
    expected = {"epochs": 1, "up": 0, "heartbeats": 0, "claimed": 0, "reported": 0,
                "revoked": 1, "pending": 4, "bps": 0}
    figs = figures(chain, 4)
    assert parts(figs, ALICE) == expected
    assert figs[(f"{U}.revoked", ALICE)][1] == (disputed,)
    chain.at(4, 100)
    chain.resolved(1, V1, 0, unanswered=1)
    figs = figures(chain, 5)                                      # the resolution changes nothing
    assert parts(figs, ALICE) == {**expected, "epochs": 2, "pending": 4}
    assert disputed in figs[(f"{U}.bps", ALICE)][1]
    assert parts(figs, BOB)["reported"] == 1 and parts(figs, BOB)["revoked"] == 0


def test_the_decoy_shield_is_gone():
    """The attack the set challenge closes: a lying validator reports an offline provider (Alice)
    among decoys of its own (Bob, Carol) whose beats it shows only on chain. The watcher names
    every inclusion it could not verify in one challenge; the liar answers the decoys (the
    contract pays it half the bond for them) and cannot answer Alice: her bit is revoked, and the
    one ChallengeResolved says one provider went unanswered."""
    chain = Chain()
    chain.at(0).register(ALICE, BOB, CAROL)
    chain.at(1)
    chain.report(V1, 0, 0, 1, 2)
    chain.at(2)
    chain.challenge(1, V1, 0, 0, 1, 2)
    chain.answer(1, V1, BOB, 0, by=V1)
    chain.answer(1, V1, CAROL, 0, by=V1)
    chain.at(4, 100)
    chain.resolved(1, V1, 0, unanswered=1)
    figs = figures(chain, 5)
    assert [parts(figs, p)["revoked"] for p in (ALICE, BOB, CAROL)] == [1, 0, 0]
    assert [parts(figs, p)["reported"] for p in (ALICE, BOB, CAROL)] == [0, 1, 1]


def test_a_beat_shown_on_another_challenge_proves_the_epoch():
    """Two validators reported Alice; each report is challenged; her beat is shown on the first
    only (the contract refuses it on the second: "beat already shown"). resolve_challenge settles
    the second as answered after the epoch is final: the compact fold takes it, nothing changes."""
    chain = Chain()
    chain.at(0).register(ALICE)
    chain.at(1)
    chain.report(V1, 0, 0)
    chain.report(V2, 0, 0)
    chain.at(2)
    chain.challenge(1, V1, 0, 0)
    chain.challenge(2, V2, 0, 0)
    chain.answer(1, V1, ALICE, 0, by=ALICE)
    chain.resolved(1, V1, 0, unanswered=0)            # answered in full: settled in the same call
    before = parts(figures(chain, 5), ALICE)
    chain.at(5, 100)
    chain.resolved(2, V2, 0, unanswered=0)            # resolve_challenge: proven on challenge 1
    assert before["reported"] == 1 and before["revoked"] == 0
    assert parts(figures(chain, 5), ALICE) == before


def test_a_challenge_naming_nobody_reported_revokes_nothing():
    """Uptime.is_up: a disputed bit that no report set is down anyway, not revoked; a named
    index past the registry names nobody in the full fold (the contract refuses it)."""
    chain = Chain()
    chain.at(0).register(ALICE, BOB)
    chain.at(1)
    chain.report(V1, 0, 0)
    chain.at(2)
    chain.challenge(1, V1, 0, 1)                         # Bob: not in this (or any) report
    figs = figures(chain, 5)
    assert parts(figs, BOB)["revoked"] == 0 and parts(figs, ALICE)["reported"] == 1
    chain.challenge(2, V1, 0, 2)                         # index 2: nobody registered
    full = {k: f.value for k, f in compute_figures(chain.events, G + 6 * EPOCH - 1).items()
            if k[0].startswith(U)}
    assert full == {k: v for k, (v, _) in figs.items()}
    with pytest.raises(ValueError, match="past the 2 providers registered"):
        ReliabilityBook(None).apply(chain.events)


def test_a_revoked_report_does_not_undo_a_heartbeat():
    chain = Chain()
    chain.at(0).register(ALICE)
    beat = chain.emit("Uptime", "Heartbeat", provider=ALICE, epoch=0, block_number=1)
    chain.at(1)
    chain.report(V1, 0, 0)
    chain.at(2)
    chain.challenge(1, V1, 0, 0)
    chain.at(4)
    chain.resolved(1, V1, 0, unanswered=1)
    figs = figures(chain, 5)
    assert parts(figs, ALICE)["heartbeats"] == 1 and parts(figs, ALICE)["revoked"] == 0
    assert figs[(f"{U}.up", ALICE)][1] == (beat,)


def test_a_receipt_claim_counts_up_at_once_like_a_heartbeat():
    chain = Chain()
    chain.at(0).register(ALICE, BOB)
    chain.at(1)
    chain.report(V1, 0, 1)                                 # Bob only: Alice left out
    chain.at(2)
    claim = chain.emit("Uptime", "BeatClaimed", provider=ALICE, epoch=0, validator=V1)
    beat = chain.emit("Uptime", "Heartbeat", provider=ALICE, epoch=2, block_number=1)
    # Not final yet, but a heartbeat bit cannot be undone: owed and up now.
    figs = figures(chain, 2)
    assert parts(figs, ALICE) == {"epochs": 2, "up": 2, "heartbeats": 1, "claimed": 1, "reported": 0,
                                  "revoked": 0, "pending": 1, "bps": 10_000}
    assert figs[(f"{U}.claimed", ALICE)][1] == (claim,)
    assert figs[(f"{U}.up", ALICE)][1] == tuple(sorted((claim, beat)))
    assert parts(figs, BOB)["epochs"] == 0 and parts(figs, BOB)["pending"] == 3


def test_the_reliability_score_reads_up_epochs():
    chain = Chain()
    chain.at(0).register(ALICE)
    for epoch in range(10):
        chain.at(epoch + 1)
        chain.report(V1, epoch, 0)
    figs = compute_figures(chain.events, G + 13 * EPOCH)      # final: epochs 0 .. 9
    assert figs[(f"{U}.up", ALICE)].value == figs[(f"{U}.epochs", ALICE)].value == 10
    assert figs[("reliability.by_provider.uptime_bps", ALICE)].value == (10 * 10_000 + 5_000 * 24) // 34
    assert set(figs[(f"{U}.up", ALICE)].txs) <= set(figs[("reliability.by_provider.uptime_bps", ALICE)].txs)


def test_epoch_states_for_the_explorer_strip():
    chain = Chain()
    chain.at(0).register(ALICE)
    chain.emit("Uptime", "Heartbeat", provider=ALICE, epoch=0, block_number=1)
    chain.at(2)
    chain.report(V1, 1, 0)
    claim = chain.emit("Uptime", "BeatClaimed", provider=ALICE, epoch=1, validator=V2)
    chain.at(4)
    report = chain.report(V1, 3, 0)
    log = UptimeLog()
    for e in chain.events:
        log.apply(e)
    states = log.epoch_states(ALICE, 0, 7, G + 7 * EPOCH)     # final: 0 .. 3
    assert [s.state for s in states] == [HEARTBEAT, CLAIM, DOWN, REPORT, PENDING, PENDING, PENDING,
                                         PENDING]
    assert states[1].txs[0] == claim and states[3].txs == (report,) and states[1].reported
    assert REVOKED not in [s.state for s in states]


def test_the_compact_book_refuses_reports_the_contract_would_refuse():
    chain = Chain()
    chain.at(0).register(ALICE)
    chain.at(3)
    chain.report(V1, 0, 0)                                   # 3 epochs late (report_delay 1)
    with pytest.raises(ValueError, match="report_delay epochs after its epoch"):
        ReliabilityBook(None).apply(chain.events)
    chain = Chain()
    chain.at(0).register(ALICE)
    chain.at(1)
    chain.report(V1, 0, 0, 1, count=2)                      # index 1: nobody registered
    with pytest.raises(ValueError, match="past the 1 providers registered"):
        ReliabilityBook(None).apply(chain.events)


def test_the_compact_book_refuses_an_answer_after_finality():
    """answer_challenge ends with the answer window, which is when the epoch turns final: an
    InclusionAnswered later would change a counted epoch, so the history is refused."""
    chain = Chain()
    chain.at(0).register(ALICE)
    chain.at(1)
    chain.report(V1, 0, 0)
    chain.at(2)
    chain.challenge(1, V1, 0, 0)
    chain.at(4)                                              # epoch 0 is final in epoch 4
    chain.answer(1, V1, ALICE, 0)
    with pytest.raises(ValueError, match="only before their epoch"):
        ReliabilityBook(None).apply(chain.events)
