"""Liveness by validators' reports (issue 15; docs/uptime.md): the beat a provider signs, the
receipt a validator signs, the bitmap a validator posts, and when an epoch is final.

Pure: no I/O. The rules are Uptime.vy's, in Python, so that daemons and the audit agree with
the contract:

- An epoch's *seed* is fixed on chain by `Uptime.open_epoch` (24 bytes of a block hash of that
  epoch, then the number of the block that opened it). A provider signs `Beat(provider,
  epoch, seed)` (EIP-712, domain: the Uptime contract): the seed is the nonce (it cannot be
  known before the epoch starts), the epoch the expiry.
- A validator that receives the beat during the epoch answers with `BeatReceipt(provider,
  validator, epoch)`; with it, a provider a report left out claims its epoch on chain (the
  signer must be a validator now, or have been one when the epoch opened).
- Once the epoch is over, a validator posts the registry indices of the beats it holds as
  256-bit words: bit i of word j is the provider with registry index 256*j + i.
- Reports are accepted in epochs e+1 .. e+report_delay; receipt claims and inclusion
  challenges (each names a set of a report's inclusions, as the same words) until
  e+report_delay+1; answers until e+report_delay+1+answer_epochs. The epoch
  is *final* after that: only then does it count as down (downtime, outage reports).
"""

from __future__ import annotations

from collections.abc import Iterable

from eth_account.signers.local import LocalAccount
from pydantic import BaseModel, ConfigDict, Field

from tessera.protocol import messages

UPTIME_DOMAIN_NAME = "TesseraUptime"
WORD_BITS = 256
MAX_LIVENESS_WORDS = 512   # Uptime.MAX_LIVENESS_WORDS: one report covers 131,072 indices
# Blocks the block that set an epoch's seed must be buried under before a provider signs it or
# a validator receipts beats over it, off the devnet unless configured (docs/uptime.md, "Reorgs").
CONFIRMATIONS = 12
# Uptime.vy's Challenge.state: answerable, answered (every named beat shown), resolved (slashed).
CHALLENGE_OPEN, CHALLENGE_ANSWERED, CHALLENGE_RESOLVED = 1, 2, 3

ADDRESS = r"^0x[0-9a-fA-F]{40}$"
SIGNATURE = r"^0x[0-9a-fA-F]{130}$"
UINT64 = 2**64 - 1

BEAT_TYPE = [
    {"name": "provider", "type": "address"},
    {"name": "epoch", "type": "uint256"},
    {"name": "seed", "type": "bytes32"},
]
BEAT_RECEIPT_TYPE = [
    {"name": "provider", "type": "address"},
    {"name": "validator", "type": "address"},
    {"name": "epoch", "type": "uint256"},
]


def _typed(primary: str, fields: list, message: dict, chain_id: int, uptime: str) -> dict:
    return messages.typed_data(primary, fields, message, chain_id, uptime, UPTIME_DOMAIN_NAME)


def beat_typed_data(chain_id: int, uptime: str, provider: str, epoch: int, seed: bytes) -> dict:
    """A provider's beat for `epoch`: it names the epoch's on-chain seed."""
    return _typed("Beat", BEAT_TYPE, {"provider": provider, "epoch": epoch, "seed": bytes(seed)},
                  chain_id, uptime)


def receipt_typed_data(chain_id: int, uptime: str, provider: str, validator: str,
                       epoch: int) -> dict:
    """A validator's receipt of a provider's beat, given during the epoch."""
    return _typed("BeatReceipt", BEAT_RECEIPT_TYPE,
                  {"provider": provider, "validator": validator, "epoch": epoch}, chain_id, uptime)


def sign_beat(account: LocalAccount, chain_id: int, uptime: str, epoch: int, seed: bytes) -> str:
    return messages.sign(account, beat_typed_data(chain_id, uptime, account.address, epoch, seed))


def sign_receipt(account: LocalAccount, chain_id: int, uptime: str, provider: str,
                 epoch: int) -> str:
    return messages.sign(account, receipt_typed_data(chain_id, uptime, provider,
                                                     account.address, epoch))


class SignedBeat(BaseModel):
    """What a provider POSTs to a validator's /liveness/beat."""

    model_config = ConfigDict(extra="forbid")

    provider: str = Field(pattern=ADDRESS)
    epoch: int = Field(ge=0, le=UINT64)
    signature: str = Field(pattern=SIGNATURE, description="the provider's EIP-712 Beat")


class BeatReceipt(BaseModel):
    """A validator's answer: its signed receipt of the beat."""

    model_config = ConfigDict(extra="forbid")

    provider: str = Field(pattern=ADDRESS)
    validator: str = Field(pattern=ADDRESS)
    epoch: int = Field(ge=0, le=UINT64)
    signature: str = Field(pattern=SIGNATURE, description="the validator's EIP-712 BeatReceipt")


def words_of(indices: Iterable[int], provider_count: int) -> list[int]:
    """The report words naming these registry indices (each below `provider_count`), as short
    as the highest index allows. ValueError for an index out of range or too many providers."""
    chosen = sorted(set(indices))
    if not chosen:
        return []
    if chosen[0] < 0 or chosen[-1] >= provider_count:
        raise ValueError(f"registry index {chosen[-1] if chosen[0] >= 0 else chosen[0]} "
                         f"is outside 0 .. {provider_count - 1}")
    words = [0] * (chosen[-1] // WORD_BITS + 1)
    if len(words) > MAX_LIVENESS_WORDS:
        raise ValueError(f"index {chosen[-1]} is past what one report covers "
                         f"({MAX_LIVENESS_WORDS * WORD_BITS} providers)")
    for index in chosen:
        words[index // WORD_BITS] |= 1 << (index % WORD_BITS)
    return words


def indices_of(words: Iterable[int]) -> list[int]:
    """The registry indices a report's words name, ascending."""
    out = []
    for j, word in enumerate(words):
        base = j * WORD_BITS
        while word:
            low = word & -word
            out.append(base + low.bit_length() - 1)
            word ^= low
    return out


def named(words: list[int], index: int) -> bool:
    """Whether the report words name registry index `index`."""
    j = index // WORD_BITS
    return j < len(words) and (words[j] >> (index % WORD_BITS)) & 1 == 1


def reports_accepted(epoch: int, current: int, report_delay: int) -> bool:
    """Whether a report for `epoch` is accepted in epoch `current` (Uptime.report_liveness)."""
    return epoch < current <= epoch + report_delay


def claims_accepted(epoch: int, current: int, report_delay: int) -> bool:
    """Whether a receipt claim or an inclusion challenge on `epoch` is accepted in `current`."""
    return epoch < current <= epoch + report_delay + 1


def answer_end(epoch: int, report_delay: int, answer_epochs: int) -> int:
    """The last epoch in which a challenge on `epoch` may be answered."""
    return epoch + report_delay + 1 + answer_epochs


def is_final(epoch: int, current: int, report_delay: int, answer_epochs: int) -> bool:
    """Uptime.is_final: nothing about `epoch`'s liveness can change any more."""
    return current > answer_end(epoch, report_delay, answer_epochs)


def last_challenge_epoch(epoch: int, report_delay: int) -> int:
    """The last epoch in which an inclusion on `epoch` may be challenged
    (Uptime.challenge_inclusions: epoch < current <= epoch + report_delay + 1)."""
    return epoch + report_delay + 1


def epoch_start(epoch: int, genesis: int, epoch_length: int) -> int:
    """Uptime.epoch_start: the timestamp `epoch` starts (`genesis`, `epoch_length`: Uptime's
    immutables)."""
    return genesis + epoch * epoch_length


def provider_answer_from(epoch: int, report_delay: int, answer_epochs: int, genesis: int,
                         epoch_length: int) -> int:
    """The chain time (a block timestamp) from which a provider answers a challenge of its own
    inclusion in a report of `epoch` (provider/inclusion_answers.py): the second half of the
    answer-only epochs, those after the last one a challenge is accepted in and up to
    `answer_end`; Uptime's `own_answer_from`, from which such a lone answer is paid its gas (a
    test checks the two agree). The validators answer first, at once and 64 beats a
    transaction, which the answer fee pays for; a provider's lone answer costs several fees of
    gas, so it is sent only if its beat is still unshown by then. From Uptime's immutables
    only: a restart, or a challenge seen late, does not move it, and a challenge sent in the
    last block of the challenge window still leaves the provider the whole second half,
    `answer_epochs * epoch_length // 2` seconds (at least half of the answer-only time)."""
    end = epoch_start(answer_end(epoch, report_delay, answer_epochs) + 1, genesis, epoch_length)
    return end - answer_epochs * epoch_length // 2


def watched_epoch(current: int, report_delay: int) -> int:
    """The epoch whose reports are all in (its report window closed) and whose inclusions can
    still be challenged in `current`: exactly one, `current - report_delay - 1` (negative
    while there is none yet)."""
    return current - report_delay - 1


# What answering costs the chain and how fast a validator answers, to size the answer window
# (Uptime's answer_epochs) to the chain deployed to. ANSWER_GAS_PER_BEAT is a model from
# measured gas: 16,772 a beat in a call of 64 (bench/results/liveness_challenge_gas.json, anvil),
# rounded up; tests/contracts/test_liveness_attacks_2.py checks it against the bench.
ANSWER_GAS_PER_BEAT = 17_000
MAX_ANSWERS = 64          # Uptime.MAX_ANSWERS: the beats one answer_challenge shows at most
# The share of a block's gas the answers to one report may count on (everyone else's traffic,
# the griefer's own included, takes the rest); a validator's group of answers fills it.
ANSWER_GAS_SHARE_BPS = 5_000
MAX_GROUP_BATCHES = 16    # answers a validator sends before waiting: a node's per-account slots
# A group is sent, then its receipts are read before the next is cut: at best one group a
# block; the window counts one every BLOCKS_PER_GROUP blocks.
BLOCKS_PER_GROUP = 2
MAX_ANSWER_EPOCHS = 64    # Uptime's constructor: answer_epochs out of range beyond it


def answer_batches_per_group(block_gas_limit: int, max_answers: int = MAX_ANSWERS) -> int:
    """The answer transactions (batches of `max_answers` beats) a validator sends as one group:
    as many as fill ANSWER_GAS_SHARE_BPS of a block, at least 1, at most MAX_GROUP_BATCHES."""
    share = block_gas_limit * ANSWER_GAS_SHARE_BPS // 10_000
    return max(1, min(MAX_GROUP_BATCHES, share // (max_answers * ANSWER_GAS_PER_BEAT)))


def answer_epochs_for(epoch_length: int, block_gas_limit: int, block_ms: int) -> int:
    """The fewest answer epochs in which a validator answering alone, one group of
    answer_batches_per_group every BLOCKS_PER_GROUP blocks of `block_ms` milliseconds, shows
    every beat of a challenge naming a whole report of the largest size (MAX_LIVENESS_WORDS
    words of WORD_BITS providers). A challenge may come in the last block of its window: the
    answer-only epochs are all the time its answers are sure to have."""
    if epoch_length < 1 or block_gas_limit < 1 or block_ms < 1:
        raise ValueError("epoch_length, block_gas_limit and block_ms must be positive")
    batches = -(-MAX_LIVENESS_WORDS * WORD_BITS // MAX_ANSWERS)
    groups = -(-batches // answer_batches_per_group(block_gas_limit))
    need_ms = groups * BLOCKS_PER_GROUP * block_ms
    return max(1, -(-need_ms // (epoch_length * 1000)))


def beat_problem(chain_id: int, uptime: str, provider: str, epoch: int, seed: bytes,
                 served: SignedBeat) -> str | None:
    """Why `served` does not prove that `provider` beat in `epoch` (None: it does): another
    provider or epoch named, or a signature that is not the provider's over this epoch's seed.
    A high-s twin counts (eth_account recovers it; anyone turns it into the low-s form the
    contract takes, so a challenge it answers would be lost)."""
    if served.provider.lower() != provider.lower() or served.epoch != epoch:
        return f"it names provider {served.provider}, epoch {served.epoch}"
    typed = beat_typed_data(chain_id, uptime, provider, epoch, seed)
    signer = messages.signer_or_none(typed, served.signature)
    if signer is None or signer.lower() != provider.lower():
        return f"signed by {signer}, not by {provider} over epoch {epoch}'s seed"
    return None
