"""Gas of Uptime's set challenge (one challenge names any set of a report's inclusions), on a
fresh local anvil with the contracts that `tessera devnet up` deploys (default parameters, the
uptime epoch one hour so that wall-clock time never moves an epoch), all in one run.

    .venv/bin/python bench/liveness_challenge_gas.py            # up to 4,096 providers (~2 min)
    .venv/bin/python bench/liveness_challenge_gas.py --quick    # up to 256, for CI (seconds)

Writes bench/results/liveness_challenge_gas.json (..._quick.json for --quick; `--out` elsewhere).
Measured, approvals not counted, every beat a real EIP-712 signature from the provider's key:

- challenge_inclusions naming n providers of a report of the same n (registry indices 0 .. n-1,
  ceil(n/256) words): the first challenge of its epoch (it writes the epoch's dispute words from
  zero), then a second one naming the same n in another validator's report of that epoch;
- answer_challenge showing k = 1, 16, 64 (MAX_ANSWERS) beats in one call, by the validator
  itself, after one beat already shown in the epoch (so no call pays for a proven word's first
  write; that first call is a row of its own); and answering a whole challenge (n = 1, 256,
  4,096) in calls of 64, the last of which settles it;
- resolve_challenge of a challenge naming n with every beat unanswered (slash) and with every
  beat shown on another validator's challenge of the epoch (settled as answered);
- own answers: named providers each showing its own beat alone in the second half of the
  answer window (Uptime.own_answer_from), paid the gas they used: the gas and what was paid,
  for the challenge's first answer, a later one, one from a provider holding stake tokens
  already, the one that settles the challenge, and one settling a griefer's challenge whose
  challenger holds nothing beside the bond.

The very first challenges of the chain (challenge_count and the contract's token balance written
from zero) are the slash cases' challenges, made first and kept apart. Providers are registered
in batches through anvil impersonation (tests/tenant/many_providers.register).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from eth_account import Account  # noqa: E402
from eth_utils import keccak  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from tests.tenant.many_providers import Identity, register  # noqa: E402

from tessera.chain.accounts import devnet_account  # noqa: E402
from tessera.chain.client import Chain  # noqa: E402
from tessera.chain.devnet import DEPLOYER, Devnet, free_port  # noqa: E402
from tessera.chain.registry import ProviderRegistry  # noqa: E402
from tessera.chain.tokens import StakeToken  # noqa: E402
from tessera.chain.uptime import Uptime  # noqa: E402
from tessera.chain.validators import Validators  # noqa: E402
from tessera.protocol import liveness  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "liveness_challenge_gas.json"
TSTK = 10**18
EPOCH_LENGTH = 3600
VALIDATOR_STAKE = 100 * TSTK
FULL = {"challenge": [1, 32, 64, 256, 1024, 4096], "answer": [1, 16, 64],
        "resolve": [1, 32, 256, 4096]}
QUICK = {"challenge": [1, 32, 64, 256], "answer": [1, 16, 64], "resolve": [1, 32, 256]}
FIRST = "first challenge of the epoch (dispute words written from zero)"
LATER = "second challenge of the epoch, same providers (dispute words already non-zero)"


def row(call: str, gas: int, named: int | None = None, answers: int | None = None,
        case: str = "") -> dict:
    per = answers if call == "answer_challenge" else named
    return {"call": call, "named": named, "answers": answers,
            "words": math.ceil(named / 256) if named else None, "gas": gas,
            "gas_per_provider": round(gas / per) if per else None, "case": case}


class Bench:
    def __init__(self, network, providers: int, validators: int):
        self.network = network
        funder = Chain(network, devnet_account(DEPLOYER))
        keys = ["0x" + keccak(b"tessera bench liveness challenge %d" % i).hex()
                for i in range(providers)]
        t0 = time.monotonic()
        register(network, [Identity(k, "refused", 1_000_000) for k in keys],
                 ["http://127.0.0.1:9"] * providers, gpu_model="A100")
        self.registration_s = round(time.monotonic() - t0, 1)
        # by registry index (a block's transactions need not keep the order they were sent in)
        by_address = {a.address: a for a in map(Account.from_key, keys)}
        self.accounts = [by_address[p] for p in ProviderRegistry(funder).provider_addresses()]
        assert len(self.accounts) == providers
        people = [Account.from_key(keccak(b"tessera bench liveness person %d" % i))
                  for i in range(validators + 1)]
        stake = StakeToken(funder)
        for a in people:
            funder.w3.provider.make_request("anvil_setBalance", [a.address, hex(10**21)])
            stake.transfer(a.address, VALIDATOR_STAKE + 10_000 * TSTK, "bench")
        self.uptimes = []
        for a in people[:validators]:  # the extra tokens: fees paid to it never start a balance
            Validators(Chain(network, a)).register(VALIDATOR_STAKE)
            self.uptimes.append(Uptime(Chain(network, a)))
        self.challenger = Uptime(Chain(network, people[-1]))
        StakeToken(self.challenger.chain).ensure_allowance(self.challenger.address, 2**255)
        self.rows: list[dict] = []
        self.answered_in_full: list[dict] = []
        self.own: list[dict] = []

    def travel_to(self, timestamp: int) -> None:
        """Mine a block at `timestamp` or later (never back in time)."""
        chain = self.challenger.chain
        now = chain.block_timestamp()
        if timestamp > now:
            chain.w3.provider.make_request("evm_increaseTime", [timestamp - now])
        chain.w3.provider.make_request("evm_mine", [])

    def advance_to(self, epoch: int) -> None:
        u = self.challenger
        self.travel_to(u.genesis() + epoch * u.epoch_length() + 1)
        assert u.current_epoch() == epoch

    def finished_epoch(self) -> int:
        """A fresh epoch, opened, and now over (its reports and challenges are due)."""
        epoch = self.challenger.current_epoch() + 1
        self.advance_to(epoch)
        self.challenger.open_epoch()
        self.advance_to(epoch + 1)
        return epoch

    def reported_epoch(self, reporters: list[Uptime], n: int,
                       log: bool = False) -> tuple[int, list[int]]:
        """A finished epoch reported by each of `reporters` naming indices 0..n-1."""
        epoch = self.finished_epoch()
        words = liveness.words_of(range(n), len(self.accounts))
        for u in reporters:
            gas = u.report_liveness(epoch, words)["gasUsed"]
            if log and u is reporters[0]:
                self.rows.append(row("report_liveness", gas, n, case="context: the report"))
        return epoch, words

    def challenge(self, reporter: Uptime, epoch: int, words: list[int], case: str) -> int:
        receipt, cid = self.challenger.challenge_inclusions(reporter.chain.address, epoch, words, words)
        self.rows.append(row("challenge_inclusions", receipt["gasUsed"],
                             len(liveness.indices_of(words)), case=case))
        return cid

    def beats(self, epoch: int, indices: range) -> tuple[list[str], list[bytes]]:
        u = self.challenger
        seed = u.seed(epoch)
        sigs = [liveness.sign_beat(self.accounts[i], self.network.chain_id, u.address, epoch, seed)
                for i in indices]
        return ([self.accounts[i].address for i in indices],
                [bytes.fromhex(s[2:]) for s in sigs])

    def answer_all(self, answerer: Uptime, cid: int, epoch: int, n: int) -> None:
        """Every named beat shown on challenge `cid`, in calls of MAX_ANSWERS (the last settles)."""
        providers, sigs = self.beats(epoch, range(n))
        step = answerer.max_answers()
        gas = [answerer.answer_challenge(cid, providers[i:i + step], sigs[i:i + step])["gasUsed"]
               for i in range(0, n, step)]
        assert answerer.challenge(cid)["state"] == liveness.CHALLENGE_ANSWERED
        self.answered_in_full.append({
            "named": n, "calls": len(gas), "gas_total": sum(gas), "gas_per_beat": round(sum(gas) / n),
            "last_call_gas (settles)": gas[-1],
            "case": "the validator answers its own challenge in full (first beats of the epoch)"})

    def own_answers(self, reporter: Uptime) -> None:
        """Providers showing their own beats alone in the second half of the answer window
        (Uptime.own_answer_from: paid their gas, not one fee), each case a row with what it
        was paid beside what it cost: the challenge's first answer (its counters and the
        epoch's proven word written from zero), a later one, one from a provider already
        holding stake tokens (its balance not written from zero), and the one that completes
        the challenge (it settles)."""
        n = 4
        epoch, words = self.reported_epoch([reporter], n)
        cid = self.challenge(reporter, epoch, words, "context: the challenge the own answers answer")
        u = self.challenger
        provider = u.chain.w3.provider
        self.travel_to(u.own_answer_from(epoch))
        fee, fee_gas = u.answer_fee(), u.chain.uptime.functions.ANSWER_FEE_GAS().call()
        addresses, sigs = self.beats(epoch, range(n))
        cases = ["the challenge's first answer, the epoch's first beat shown, the provider holding "
                 "no stake token", "a later answer, the provider holding no stake token",
                 "a later answer, the provider holding stake tokens already",
                 "the last named beat (settles the challenge)"]
        for i, case in enumerate(cases):
            account = self.accounts[i]
            provider.make_request("anvil_setBalance", [account.address, hex(10**20)])
            if "holding stake tokens" in case:
                StakeToken(self.challenger.chain).transfer(account.address, TSTK, "bench")
            self.own_answer(cid, account, addresses[i], sigs[i], fee, fee_gas, case)
        assert u.challenge(cid)["state"] == liveness.CHALLENGE_ANSWERED
        # A griefer holding exactly one bond: the settlement writes its balance from zero.
        griefer = Account.from_key(keccak(b"tessera bench liveness griefer"))
        provider.make_request("anvil_setBalance", [griefer.address, hex(10**20)])
        epoch, words = self.reported_epoch([reporter], n)
        named = liveness.words_of([n - 1], len(self.accounts))
        StakeToken(u.chain).transfer(griefer.address, u.challenge_bond_for(1), "bench")
        own_griefer = Uptime(Chain(self.network, griefer))
        StakeToken(own_griefer.chain).ensure_allowance(own_griefer.address, 2**255)
        _, cid = own_griefer.challenge_inclusions(reporter.chain.address, epoch, words, named)
        assert StakeToken(u.chain).balance_of(griefer.address) == 0
        self.travel_to(u.own_answer_from(epoch))
        addresses, sigs = self.beats(epoch, range(n - 1, n))
        self.own_answer(cid, self.accounts[n - 1], addresses[0], sigs[0], fee, fee_gas,
                        "the only named beat (the challenge's first answer, it settles), the "
                        "challenger holding no stake token")
        assert u.challenge(cid)["state"] == liveness.CHALLENGE_ANSWERED

    def own_answer(self, cid: int, account, address: str, sig: bytes, fee: int, fee_gas: int,
                   case: str) -> None:
        own = Uptime(Chain(self.network, account))
        receipt = own.answer_challenge(cid, [address], [sig])
        (answer,) = own.answers_in(receipt)
        paid, gas = answer["to_answerer"], receipt["gasUsed"]
        self.own.append({"case": case, "gas": gas, "paid": paid, "paid_in_fees": round(paid / fee, 3),
                         "paid_as_gas": paid * fee_gas // fee,
                         "paid_over_gas": round(paid * fee_gas / fee / gas, 4)})

    def run(self, sizes: dict) -> dict:
        a, b, *slashed = self.uptimes
        # 1. The slash cases' challenges, the chain's first (kept apart as such).
        resolve = sizes["resolve"]
        epoch = self.finished_epoch()
        to_slash = []
        for u, n in zip(slashed, resolve, strict=True):
            words = liveness.words_of(range(n), len(self.accounts))
            u.report_liveness(epoch, words)
            case = "context: the chain's first challenges (counter, token balance from zero)"
            to_slash.append((self.challenge(u, epoch, words, case), n))
        for u in (a, b):  # their first challenge (writes from zero) kept out of the rows
            u.report_liveness(epoch, [1])
            self.challenge(u, epoch, [1], "context: warm-up (the validator's first challenge)")
        # 2. Per size: A's report challenged first, B's second; B answers in full where a
        #    resolve size asks, so that A's challenge is answered elsewhere.
        elsewhere = []
        for n in sizes["challenge"]:
            epoch, words = self.reported_epoch([a, b], n, log=True)
            cid_a = self.challenge(a, epoch, words, FIRST)
            cid_b = self.challenge(b, epoch, words, LATER)
            if n in resolve:
                self.answer_all(b, cid_b, epoch, n)
                elsewhere.append((cid_a, n))
        # 3. answer_challenge of k beats: one beat first (the epoch's first proven write), then
        #    k = 1, 16, 64; one named beat is left unshown, so that no call settles.
        ks = sizes["answer"]
        n = 1 + sum(ks) + 1
        epoch, words = self.reported_epoch([b], n)
        cid = self.challenge(b, epoch, words, "context: the challenge the answer rows answer")
        providers, sigs = self.beats(epoch, range(n))
        first = 0
        opening = ("the challenge's first answer, the epoch's first beat shown (proven word, "
                   "answered, paid written from zero)")
        for k, case in [(1, opening)] + [(k, "proven word already non-zero") for k in ks]:
            gas = b.answer_challenge(cid, providers[first:first + k], sigs[first:first + k])
            self.rows.append(row("answer_challenge", gas["gasUsed"], n, k, case))
            first += k
        assert b.challenge(cid)["state"] == liveness.CHALLENGE_OPEN
        self.own_answers(b)
        # 4. Past every answer window: resolve.
        self.advance_to(self.challenger.current_epoch() + 3)
        validators = Validators(self.challenger.chain)
        for (cid, n), u in zip(to_slash, slashed, strict=True):
            stake = validators.stake_of(u.chain.address)
            gas = self.challenger.resolve_challenge(cid)["gasUsed"]
            assert self.challenger.challenge(cid)["state"] == liveness.CHALLENGE_RESOLVED
            took = stake - validators.stake_of(u.chain.address)
            self.rows.append({**row("resolve_challenge", gas, n, case="all unanswered: slash"),
                              "slashed": took, "slashed_whole_stake": took == stake})
        for cid, n in elsewhere:
            gas = self.challenger.resolve_challenge(cid)["gasUsed"]
            assert self.challenger.challenge(cid)["state"] == liveness.CHALLENGE_ANSWERED
            self.rows.append(row("resolve_challenge", gas, n,
                                 case="all answered elsewhere (on another challenge): settled"))
        return {"rows": self.rows, "answered_in_full": self.answered_in_full,
                "own_answers": self.own}


def figures(result: dict, contract: dict) -> dict:
    """The per-provider figures, and the griefing model (labelled so) built from them."""
    rows = result["rows"]

    def pick(call: str, case: str, key: str = "named") -> dict[int, int]:
        return {r[key]: r["gas"] for r in rows if r["call"] == call and r["case"] == case}

    first = pick("challenge_inclusions", FIRST)
    lo, hi = min(first), max(first)
    answers = pick("answer_challenge", "proven word already non-zero", "answers")
    k_max = max(answers)
    per_beat = round(answers[k_max] / k_max)
    k_lo = min(answers)
    slash = pick("resolve_challenge", "all unanswered: slash")
    elsewhere = pick("resolve_challenge", "all answered elsewhere (on another challenge): settled")
    per_bond = contract["NAMED_PER_BOND"]
    full = {x["named"]: x for x in result["answered_in_full"]}
    per_provider = {
        "challenge_gas_per_named_provider": {str(n): round(g / n) for n, g in first.items()},
        "challenge_marginal_gas_per_named_provider": round((first[hi] - first[lo]) / (hi - lo), 1),
        # None when every size fits one registry word (the --quick run)
        "challenge_marginal_gas_per_word": round(
            (first[hi] - first[lo]) / (math.ceil(hi / 256) - 1), 1) if hi > 256 else None,
        "gas_per_beat_answered": per_beat,
        "gas_per_beat_answered_note": f"answer_challenge showing {k_max} beats (MAX_ANSWERS) in "
                                      "one call, divided by them; the call's fixed cost included",
        "gas_per_beat_answered_by_k": {str(k): round(g / k) for k, g in answers.items()},
        "answer_marginal_gas_per_beat": round((answers[k_max] - answers[k_lo]) / (k_max - k_lo), 1),
        "resolve_slash_gas_per_named_provider": {str(n): round(g / n) for n, g in slash.items()},
        "resolve_answered_elsewhere_gas_per_named_provider": {
            str(n): round(g / n) for n, g in elsewhere.items()},
    }
    model = {
        "label": "MODEL computed from measured gas (not itself measured): the gas a griefer "
                 "forces an honest validator to spend per challenge_bond = NAMED_PER_BOND x "
                 "measured gas per beat answered (answer_challenge of MAX_ANSWERS beats)",
        "named_per_bond": per_bond,
        "gas_per_beat_answered": per_beat,
        "griefer_forced_gas_per_challenge_bond": per_bond * per_beat,
        "answer_calls_per_challenge_bond": math.ceil(per_bond / k_max),
        "challenge_bond": contract["challenge_bond"],
        "note": "whoever answers a named beat is paid the answer fee, challenge_bond x "
                "ANSWER_FEE_BPS / 10,000 / NAMED_PER_BOND, from the griefer's bond; the rest of "
                "the bond goes back to the challenger",
    }
    if per_bond in full:
        model["measured_check_answer_in_full_gas"] = full[per_bond]["gas_total"]
        model["measured_check_note"] = (f"measured: a challenge naming {per_bond} answered in "
                                        f"full in {full[per_bond]['calls']} calls (the last "
                                        "settles; the epoch's first proven write included)")
    own = result["own_answers"]
    own_answer = {
        "gas_min": min(r["gas"] for r in own), "gas_max": max(r["gas"] for r in own),
        "paid_over_gas_min": min(r["paid_over_gas"] for r in own),
        "paid_over_gas_max": max(r["paid_over_gas"] for r in own),
        "note": "a named provider showing its own beat alone from own_answer_from (the second "
                "half of the answer window) is paid the gas it used at the fee's rate "
                "(answer_fee / ANSWER_FEE_GAS); paid_over_gas = that pay in gas / the "
                "receipt's gasUsed (>= 1: the provider loses nothing)",
    }
    return {"per_provider": per_provider, "model": model, "own_answer": own_answer}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="up to 256 providers (CI)")
    parser.add_argument("--out", type=Path, default=None, help=f"default {RESULTS}")
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    out = args.out or (RESULTS.with_name("liveness_challenge_gas_quick.json") if args.quick
                       else RESULTS)
    console = Console()
    t0 = time.monotonic()
    devnet = Devnet(Path(tempfile.mkdtemp(prefix="tessera-bench-")) / "devnet")
    network = devnet.up(port=free_port(), epoch_length=EPOCH_LENGTH)
    try:
        bench = Bench(network, max(sizes["challenge"]), 2 + len(sizes["resolve"]))
        console.print(f"{len(bench.accounts)} providers registered in {bench.registration_s} s")
        result = bench.run(sizes)
        u = bench.challenger
        bond, slash = u.challenge_rules()
        delay, answer_epochs = u.liveness_rules()
        fn = u.chain.uptime.functions
        contract = {"challenge_bond": bond, "inclusion_slash": slash, "report_delay": delay,
                    "answer_epochs": answer_epochs, "epoch_length": u.epoch_length(),
                    "NAMED_PER_BOND": fn.NAMED_PER_BOND().call(),
                    "MAX_ANSWERS": u.max_answers(),
                    "ANSWER_FEE_BPS": fn.ANSWER_FEE_BPS().call(),
                    "ANSWER_FEE_GAS": fn.ANSWER_FEE_GAS().call(),
                    "OWN_ANSWER_OVERHEAD_GAS": fn.OWN_ANSWER_OVERHEAD_GAS().call(),
                    "OWN_ANSWER_SETTLE_GAS": fn.OWN_ANSWER_SETTLE_GAS().call(),
                    "OWN_ANSWER_MAX_FEES": fn.OWN_ANSWER_MAX_FEES().call(),
                    "answer_fee": fn.answer_fee().call(),
                    "CHALLENGER_SHARE_BPS": fn.CHALLENGER_SHARE_BPS().call()}
    finally:
        devnet.down()
    table = Table(title="Uptime set challenge gas on anvil (default parameters; approvals not counted)")
    for col in ("call", "named", "answers", "gas", "gas / provider", "case"):
        table.add_column(col, justify="left" if col in ("call", "case") else "right")
    for r in result["rows"]:
        table.add_row(r["call"], str(r["named"] or ""), str(r["answers"] or ""), f"{r['gas']:,}",
                      f"{r['gas_per_provider']:,}", r["case"])
    console.print(table)
    for r in result["own_answers"]:
        console.print(f"own answer: {r['gas']:,} gas, paid {r['paid_in_fees']} fees = "
                      f"{r['paid_as_gas']:,} gas ({r['paid_over_gas']:.3f} of it): {r['case']}")
    derived = figures(result, contract)
    console.print(derived)
    report = {"quick": args.quick, "config": {"sizes": sizes, "providers": len(bench.accounts),
                                              "contract": contract},
              **result, **derived, "registration_s": bench.registration_s,
              "wall_s": round(time.monotonic() - t0, 1)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"written to {out}")


if __name__ == "__main__":
    main()
