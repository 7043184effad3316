"""Uptime.vy: liveness per provider and epoch (heartbeats, validators' reports, receipt claims,
inclusion challenges) and outage reports (docs/uptime.md)."""

from __future__ import annotations

from web3.exceptions import BadFunctionCallOutput
from web3.types import TxReceipt

from tessera.chain.contract import ContractWrapper


class Uptime(ContractWrapper):
    NAME = "Uptime"

    def genesis(self) -> int:
        return self._call("genesis")

    def epoch_length(self) -> int:
        return self._call("epoch_length")

    def jail_after(self) -> int:
        return self._call("jail_after")

    def current_epoch(self) -> int:
        return self._call("current_epoch")

    def liveness_rules(self) -> tuple[int, int]:
        """(report_delay, answer_epochs): immutable, the windows of protocol.liveness."""
        return self._call("report_delay"), self._call("answer_epochs")

    def challenge_rules(self) -> tuple[int, int]:
        """(challenge_bond, inclusion_slash): immutable, in stake-token base units."""
        return self._call("challenge_bond"), self._call("inclusion_slash")

    def beats(self, provider: str, epoch: int) -> bool:
        """A heartbeat transaction (or a claimed receipt) for `epoch`."""
        return bool(self._call("beats", provider, epoch))

    def beat_word(self, provider: str, index: int) -> int:
        """Epochs 256·index .. 256·index+255 of a provider's heartbeats as a bitmap."""
        return self._call("beat_word", provider, index)

    def is_up(self, provider: str, epoch: int) -> bool:
        """Heartbeat, claimed receipt or unrevoked report; an epoch not yet final counts as up."""
        return bool(self._call("is_up", provider, epoch))

    def is_final(self, epoch: int) -> bool:
        return bool(self._call("is_final", epoch))

    def live_word(self, epoch: int, index: int) -> int:
        """Registry indices 256·index .. 256·index+255 named live in `epoch` (less revoked)."""
        return self._call("live_word", epoch, index)

    def seed(self, epoch: int, block_identifier: int | str = "latest") -> bytes:
        """The epoch's seed as of `block_identifier` (zero bytes until someone opens the epoch,
        and at a block before Uptime existed). Daemons read it at head - confirmations: a seed
        a reorg can still change must not be signed (docs/uptime.md, "Reorgs")."""
        if block_identifier == "latest":
            return bytes(self._call("seed", epoch))
        fn = self.contract.functions.seed(epoch)
        try:
            return bytes(self.chain.rpc(lambda: fn.call(block_identifier=block_identifier),
                                        what="seed"))
        except BadFunctionCallOutput:   # no code at that block: not deployed yet
            return bytes(32)

    def opened_block(self, epoch: int) -> int:
        """The block that opened `epoch` (0 if never): a receipt's validator counts for
        `claim_beat` if it is one now or was one at the end of that block."""
        return self._call("opened_block", epoch)

    def report_hash(self, validator: str, epoch: int) -> bytes:
        return bytes(self._call("report_hash", validator, epoch))

    def challenge(self, challenge_id: int) -> dict:
        return self._struct("challenges", challenge_id)

    def reported_until(self, provider: str) -> int:
        return self._call("reported_until", provider)

    def heartbeat(self, epoch: int, block_number: int, block_hash: bytes) -> TxReceipt:
        """This account's heartbeat for `epoch`, naming a recent block (proof of liveness)."""
        return self._send("heartbeat", epoch, block_number, block_hash)

    def open_epoch(self) -> TxReceipt:
        """Fix the current epoch's seed (idempotent; anyone)."""
        return self._send("open_epoch")

    def report_liveness(self, epoch: int, words: list[int]) -> TxReceipt:
        """A validator's report: the registry indices whose beats it holds, as 256-bit words."""
        return self._send("report_liveness", epoch, words)

    def claim_beat(self, epoch: int, validator: str, receipt_signature: bytes,
                   beat_signature: bytes) -> TxReceipt:
        """This provider's epoch, with a validator's receipt that its report left out."""
        return self._send("claim_beat", epoch, validator, receipt_signature, beat_signature)

    def max_answers(self) -> int:
        """Uptime.MAX_ANSWERS: the most beats one answer_challenge call may show."""
        return self._call("MAX_ANSWERS")

    def challenge_bond_for(self, named: int) -> int:
        """The bond of a challenge naming `named` providers (challenge_bond per
        Uptime.NAMED_PER_BOND of them, rounded up), in stake-token base units."""
        return self._call("challenge_bond_for", named)

    def answer_fee(self) -> int:
        """The fee each beat shown on a challenge pays its shower (InclusionAnswered's
        to_answerer): challenge_bond * ANSWER_FEE_BPS / 10,000 / NAMED_PER_BOND, about one
        batched answer's gas. A provider's own lone answer in the second half is paid its gas
        instead (`own_answer_from`, at most `most_paid_per_beat`); the rest of the bond always
        comes back to the challenger."""
        return self._call("answer_fee")

    def own_answer_from(self, epoch: int) -> int:
        """The block timestamp from which a named provider showing its own beat of `epoch`
        alone is paid the gas it used (an own answer) instead of one answer fee: the second
        half of the answer-only epochs (protocol.liveness.provider_answer_from)."""
        return self._call("own_answer_from", epoch)

    def most_paid_per_beat(self) -> int:
        """The most one beat shown can cost its challenge's bond: an own answer's cap,
        answer_fee x Uptime.OWN_ANSWER_MAX_FEES (a challenger's worst case per named provider;
        the bond covers it)."""
        return self.answer_fee() * self._call("OWN_ANSWER_MAX_FEES")

    def named_per_bond(self) -> int:
        """Uptime.NAMED_PER_BOND: the providers one challenge_bond covers."""
        return self._call("NAMED_PER_BOND")

    def named_word(self, challenge_id: int, index: int) -> int:
        """The providers a challenge names, registry indices 256·index .. 256·index+255."""
        return self._call("named_word", challenge_id, index)

    def challenged_word(self, validator: str, epoch: int, index: int) -> int:
        """Inclusions of `validator`'s report on `epoch` already named by a challenge."""
        return self._call("challenged_word", validator, epoch, index)

    def proven_word(self, epoch: int, index: int) -> int:
        """Challenged providers whose beat of `epoch` was shown in time on a challenge."""
        return self._call("proven_word", epoch, index)

    def challenge_inclusions(self, validator: str, epoch: int, words: list[int],
                             named: list[int]) -> tuple[TxReceipt, int]:
        """Challenge the inclusions `named` (a bitmap of registry indices, a subset of the
        report `words`) of `validator`'s report on `epoch`; those a challenge named already
        are left out (refused only when none is left: "every provider named was challenged
        already"). The bond is challenge_bond_for(the providers it names): approve the stake
        token for challenge_bond_for(all of `named`) first. What it named:
        `challenged_set(receipt)`."""
        receipt = self._send("challenge_inclusions", validator, epoch, words, named)
        return receipt, self._event(receipt, "InclusionsChallenged")["challenge_id"]

    def challenged_set(self, receipt: TxReceipt) -> dict:
        """The InclusionsChallenged of a `challenge_inclusions` receipt: its `named` bitmap
        is what the challenge actually names, `bond` what it took."""
        return self._event(receipt, "InclusionsChallenged")

    def answer_challenge(self, challenge_id: int, providers: list[str],
                         beat_signatures: list[bytes], wait: bool = True) -> TxReceipt:
        """Show named providers' beats (at most Uptime.MAX_ANSWERS a call); each pays this
        account answer_fee() (InclusionAnswered's to_answerer). A provider whose beat was shown
        already (on any challenge of the epoch) is skipped, unpaid; refused only when every one
        given was ("every beat given was shown already"). Once every named beat is shown on
        this challenge, the rest of the bond goes back to the challenger. wait=False: sent,
        not waited for (Chain.send); the receipt is `chain.wait_for`'s."""
        fn = self.contract.functions.answer_challenge(challenge_id, providers, beat_signatures)
        return self.chain.send(fn, wait=wait)

    def answers_in(self, receipt: TxReceipt) -> list[dict]:
        """The InclusionAnswered events of an `answer_challenge` receipt: the beats it showed
        (those shown already were skipped)."""
        return self._events(receipt, "InclusionAnswered")

    def resolve_challenge(self, challenge_id: int) -> TxReceipt:
        """After the answer window: slash per unanswered named provider, or settle as answered;
        either way the bond less the fees paid goes back to the challenger (the caller gains
        nothing)."""
        return self._send("resolve_challenge", challenge_id)

    def report_outage(self, provider: str, first_epoch: int) -> tuple[TxReceipt, dict]:
        """Report `jail_after` final epochs not up; the receipt and its OutageReported."""
        receipt = self._send("report_outage", provider, first_epoch)
        return receipt, self._event(receipt, "OutageReported")
