# pragma version ~=0.4.3
"""
@title Tessera uptime: heartbeats and validators' liveness reports
@license GNU Affero General Public License v3.0 or later
@notice Whether a registered provider was live in an epoch (epoch = (block.timestamp -
        genesis) // epoch_length, genesis = deploy time). Two ways in (docs/uptime.md):
        - Liveness reports (the default at scale: chain cost grows with validators, not
          providers). Anyone opens an epoch, fixing its seed (a block hash of that epoch). A
          provider signs an EIP-712 `Beat(provider, epoch, seed)` off chain and hands it to
          validators, who answer with a signed `BeatReceipt`. Once the epoch is over, each
          validator posts ONE bitmap of registry indices whose beats it holds; the bitmaps are
          OR-ed into the epoch's live bitmap (one storage word per 256 providers).
          Anyone challenges a report with a bond, naming any set of the providers it names (one
          call may name all of them: a liar cannot hide a false inclusion among true ones that
          it only shows on chain). Each named provider whose beat signature nobody shows in
          time costs the validator `inclusion_slash`, and its bit is revoked (at finality,
          whether or not anyone resolves the challenge); each beat shown in time pays its
          shower a fixed answer fee from the bond (about one batched answer's gas), and the
          rest of the bond goes back to the challenger. Nothing is paid to the validator: a
          liar that withholds beats and answers them on chain earns its gas back, no more.
          No lock either: the constructor requires the Validators' unbonding period to
          outlast a challenge's answer window, so a challenged validator's stake is still
          there (active or unbonding) when the challenge can be resolved. A provider left out of a report
          despite a receipt (from a validator now, or when the epoch opened) claims its epoch
          with the receipt.
        - A heartbeat transaction naming a recent block (number and hash, checked with
          BLOCKHASH): one bit in the provider's 256-epoch bitmap word. Always accepted: the
          fallback of a provider no validator answers.
        An epoch is final `report_delay + 1 + answer_epochs` epochs after it ends; until then it
        counts as up (`is_up`), so that downtime claims and outage reports wait for the reports.
        Anyone may report `jail_after` consecutive final epochs in which a provider was not up:
        it is jailed through the registry (this contract holds the slasher role) for
        `jail_period` seconds, once per reported stretch of epochs.
"""

from ethereum.ercs import IERC20
from snekmate.utils import eip712_domain_separator
initializes: eip712_domain_separator

exports: eip712_domain_separator.eip712Domain

import bitcount
import signature
from .interfaces import IProviderRegistry
from .interfaces import IStakeToken
from .interfaces import IValidators

from .interfaces import IUptime
implements: IUptime


struct Challenge:
    validator: address
    epoch: uint256
    challenger: address
    bond: uint256
    # providers named (their registry bits: named_word), and how many of them were answered here
    named: uint256
    answered: uint256
    # answer fees paid so far (an answer fee per beat shown; an own answer, up to
    # OWN_ANSWER_MAX_FEES of them)
    paid: uint256
    # registry words the named bitmap spans (named_word(id, j) for j < words)
    words: uint256
    # 0 none, 1 open, 2 answered (every named beat shown), 3 resolved (validator slashed)
    state: uint8


event UptimeStarted:
    registry: indexed(address)
    genesis: uint256
    epoch_length: uint256
    jail_after: uint256
    jail_period: uint256


event LivenessRulesSet:
    validators: indexed(address)
    report_delay: uint256
    answer_epochs: uint256
    challenge_bond: uint256
    inclusion_slash: uint256


event Heartbeat:
    provider: indexed(address)
    epoch: indexed(uint256)
    block_number: uint256


event OutageReported:
    provider: indexed(address)
    first_epoch: uint256
    last_epoch: uint256
    jailed_until: uint256
    reporter: indexed(address)


event EpochOpened:
    epoch: indexed(uint256)
    seed: bytes32
    opener: indexed(address)


event LivenessReported:
    validator: indexed(address)
    epoch: indexed(uint256)
    words_hash: bytes32
    words: DynArray[uint256, MAX_LIVENESS_WORDS]


event BeatClaimed:
    provider: indexed(address)
    epoch: indexed(uint256)
    validator: indexed(address)


# `named` is a bitmap of registry indices like a report's words (bit i of named[j] is the
# provider with index 256*j + i), a subset of the validator's report.
event InclusionsChallenged:
    challenge_id: indexed(uint256)
    validator: indexed(address)
    epoch: indexed(uint256)
    challenger: address
    named_count: uint256
    bond: uint256
    answer_by_epoch: uint256
    named: DynArray[uint256, MAX_LIVENESS_WORDS]


# One named provider's beat shown in time on this challenge: to_answerer of the bond (the
# answer fee) to answered_by.
event InclusionAnswered:
    challenge_id: indexed(uint256)
    validator: indexed(address)
    provider: indexed(address)
    epoch: uint256
    answered_by: address
    to_answerer: uint256


# A challenge is over; the bond less the answer fees goes back to the challenger
# (bond_returned). unanswered == 0: state ANSWERED (every named beat was shown, here or on
# another challenge). Otherwise state RESOLVED: the validator is slashed inclusion_slash per
# unanswered provider (slashed: what it had), CHALLENGER_SHARE_BPS of it to the challenger
# (to_challenger), the remainder burned.
event ChallengeResolved:
    challenge_id: indexed(uint256)
    validator: indexed(address)
    epoch: indexed(uint256)
    unanswered: uint256
    slashed: uint256
    to_challenger: uint256
    burned: uint256
    bond_returned: uint256


# Upper bound of the loop in `report_outage` (Vyper loops need a constant bound).
MAX_JAIL_AFTER: public(constant(uint256)) = 1_024
# A liveness report covers registry indices 0 .. 256 * MAX_LIVENESS_WORDS - 1 (131,072).
MAX_LIVENESS_WORDS: public(constant(uint256)) = 512
# One challenge_bond buys a challenge naming up to this many providers (the bond grows by one
# challenge_bond per further NAMED_PER_BOND), so that the bond always covers the answer fees,
# own answers' included (OWN_ANSWER_MAX_FEES x ANSWER_FEE_BPS <= 10,000).
NAMED_PER_BOND: public(constant(uint256)) = 32
# Beats one answer_challenge call may show (a bound for its loop).
MAX_ANSWERS: public(constant(uint256)) = 64
BEAT_TYPEHASH: public(constant(bytes32)) = keccak256("Beat(address provider,uint256 epoch,bytes32 seed)")
BEAT_RECEIPT_TYPEHASH: public(constant(bytes32)) = keccak256(
    "BeatReceipt(address provider,address validator,uint256 epoch)"
)
# The challenger's share of an unanswered inclusion's slash; the rest is burned, so that a lying
# validator that front-runs an honest challenge with its own (from a second address) still
# loses most of the slash (basis points).
CHALLENGER_SHARE_BPS: public(constant(uint256)) = 2_000
# The answer fee: each beat shown on a challenge pays its shower challenge_bond *
# ANSWER_FEE_BPS / 10_000 / NAMED_PER_BOND (challenge_bond / 512). Sized to one batched
# answer's gas (ANSWER_FEE_GAS), not more: a validator (or its second address) answering beats
# it withheld earns back its gas, so withholding them to drain challengers' bonds pays nothing;
# a griefer naming an honest report's inclusions pays each answerer's gas (basis points).
ANSWER_FEE_BPS: public(constant(uint256)) = 625
# The gas the answer fee is sized to: one beat in an answer of MAX_ANSWERS (16,772 measured,
# bench/results/liveness_challenge_gas.json, rounded up; protocol.liveness.ANSWER_GAS_PER_BEAT).
ANSWER_FEE_GAS: public(constant(uint256)) = 17_000
# The own answer: a named provider showing its own beat alone (one beat, sent by the provider)
# from own_answer_from(epoch) on, the second half of the answer-only epochs, when the
# validators that hold its beat have not answered. That lone transaction costs 5.5-10.5 fees of
# gas (94,300-177,900 on anvil), so it is paid the gas it used (measured in the call, plus
# OWN_ANSWER_OVERHEAD_GAS for what the call cannot measure: the 21,000 of any transaction, its
# calldata, the log and the fee's token transfer; OWN_ANSWER_SETTLE_GAS more when the answer
# completes the challenge and so settles it; FRESH_BALANCE_GAS for each balance written from
# zero) at the answer fee's rate, fee / ANSWER_FEE_GAS, at least one fee and at most
# OWN_ANSWER_MAX_FEES: so a griefer's challenge costs an honest provider nothing, and a
# provider colluding with a withholding validator earns its gas back from a watcher's bond, as
# the validator would, no more. A sender with code is paid one fee (see answer_challenge).
OWN_ANSWER_OVERHEAD_GAS: public(constant(uint256)) = 40_000
OWN_ANSWER_SETTLE_GAS: public(constant(uint256)) = 14_000
# What writing a token balance from zero costs beyond writing a non-zero one (EIP-2200/2929:
# 20,000 + 2,100 against 2,900 + 2,100): added for each such balance the own answer's
# transfers write (the provider holding none; the challenger holding none at the settlement).
FRESH_BALANCE_GAS: public(constant(uint256)) = 17_100
OWN_ANSWER_MAX_FEES: public(constant(uint256)) = 16
# open_epoch stores seed = the previous block's hash with its low 64 bits replaced by the
# number of the block it ran in (no second storage slot): claim_beat reads that block back.
SEED_BLOCK_MASK: constant(uint256) = 2**64 - 1
OPEN: constant(uint8) = 1
ANSWERED: constant(uint8) = 2
RESOLVED: constant(uint8) = 3

registry: public(immutable(address))
validators: public(immutable(address))
stake_token: public(immutable(address))
genesis: public(immutable(uint256))
epoch_length: public(immutable(uint256))
jail_after: public(immutable(uint256))
jail_period: public(immutable(uint256))
# reports (and receipt claims) for epoch e are accepted in epochs e+1 .. e+report_delay
report_delay: public(immutable(uint256))
# a challenge on epoch e is answered until the end of epoch e + report_delay + 1 + answer_epochs
answer_epochs: public(immutable(uint256))
challenge_bond: public(immutable(uint256))
inclusion_slash: public(immutable(uint256))

# provider -> epoch // 256 -> bitmap of the epochs with a heartbeat (or a claimed receipt)
_beats: HashMap[address, HashMap[uint256, uint256]]
# provider -> first epoch not covered by an already reported outage
reported_until: public(HashMap[address, uint256])
# epoch -> its seed (the high 192 bits of a block hash of that epoch, then the number of the
# block that opened it), zero until opened
seed: public(HashMap[uint256, bytes32])
# epoch -> registry index // 256 -> OR of the validators' reports
_live: HashMap[uint256, HashMap[uint256, uint256]]
# epoch -> registry index // 256 -> providers whose inclusion was challenged ...
_disputed: HashMap[uint256, HashMap[uint256, uint256]]
# ... and those whose beat signature was then shown (an answered challenge). Once the epoch is
# final, a disputed bit that is not proven is not live: revoked without waiting for anyone to
# call resolve_challenge, so that is_up of a final epoch never changes.
_proven: HashMap[uint256, HashMap[uint256, uint256]]
# validator -> epoch -> keccak256(abi_encode(words)) of its report (zero: none)
report_hash: public(HashMap[address, HashMap[uint256, bytes32]])
challenges: public(HashMap[uint256, Challenge])
challenge_count: public(uint256)
# challenge id -> registry index // 256 -> the providers it names
_named: HashMap[uint256, HashMap[uint256, uint256]]
# validator -> epoch -> registry index // 256 -> inclusions already named by a challenge
_challenged: HashMap[address, HashMap[uint256, HashMap[uint256, uint256]]]


@deploy
def __init__(
    registry_: address,
    validators_: address,
    epoch_length_: uint256,
    jail_after_: uint256,
    jail_period_: uint256,
    report_delay_: uint256,
    answer_epochs_: uint256,
    challenge_bond_: uint256,
    inclusion_slash_: uint256,
):
    """
    @notice Epoch 0 starts now. Grant this contract the registry's slasher role (so that
            `report_outage` can jail) and the Validators' slasher role (so that an unanswered
            challenge slashes). The EIP-712 domain
            of beats and receipts is ("TesseraUptime", "1", chain id, this contract).
    @param registry_ The ProviderRegistry whose providers are live or not.
    @param validators_ The Validators registry (who may report, who is slashed).
    @param epoch_length_ Seconds per epoch (more than zero).
    @param jail_after_ Consecutive missed epochs that can be reported (1 .. MAX_JAIL_AFTER).
    @param jail_period_ Seconds a reported provider is jailed for (more than zero).
    @param report_delay_ Epochs after an epoch in which its reports are accepted (1 .. 64).
    @param answer_epochs_ Epochs a challenge opened at the last moment has to be answered (1 .. 64).
    @param challenge_bond_ Stake-token bond of a challenge (more than zero).
    @param inclusion_slash_ Stake taken from a validator per challenged inclusion left
           unanswered (at most what it has: a huge value means all of it).
    """
    assert registry_ != empty(address), "uptime: zero registry"
    assert validators_ != empty(address), "uptime: zero validators"
    assert epoch_length_ > 0, "uptime: zero epoch length"
    assert jail_after_ > 0 and jail_after_ <= MAX_JAIL_AFTER, "uptime: jail_after out of range"
    assert jail_period_ > 0, "uptime: zero jail period"
    assert report_delay_ > 0 and report_delay_ <= 64, "uptime: report_delay out of range"
    assert answer_epochs_ > 0 and answer_epochs_ <= 64, "uptime: answer_epochs out of range"
    # A validator may request unbonding right after it reports (epoch e+1); a challenge of that
    # report is resolved from epoch answer_end(e) + 1 = e + report_delay + answer_epochs + 2 on.
    # Its stake must still be slashable then (active or unbonding), with one epoch to spare for
    # the resolve: so no challenge needs to lock it (a lock anyone could renew every epoch would
    # keep an honest validator from ever leaving).
    # (Written as a division, so that a huge epoch length reads as this, not as an overflow.)
    assert epoch_length_ <= staticcall IValidators(validators_).unbonding_period() // (report_delay_ + answer_epochs_ + 3), "uptime: unbonding period shorter than a challenge"
    assert challenge_bond_ > 0, "uptime: zero challenge bond"
    eip712_domain_separator.__init__("TesseraUptime", "1")
    registry = registry_
    validators = validators_
    stake_token = staticcall IValidators(validators_).stake_token()
    genesis = block.timestamp
    epoch_length = epoch_length_
    jail_after = jail_after_
    jail_period = jail_period_
    report_delay = report_delay_
    answer_epochs = answer_epochs_
    challenge_bond = challenge_bond_
    inclusion_slash = inclusion_slash_
    log UptimeStarted(
        registry=registry_,
        genesis=block.timestamp,
        epoch_length=epoch_length_,
        jail_after=jail_after_,
        jail_period=jail_period_,
    )
    log LivenessRulesSet(
        validators=validators_,
        report_delay=report_delay_,
        answer_epochs=answer_epochs_,
        challenge_bond=challenge_bond_,
        inclusion_slash=inclusion_slash_,
    )


@internal
@view
def _current_epoch() -> uint256:
    return (block.timestamp - genesis) // epoch_length


@internal
@view
def _answer_end(epoch: uint256) -> uint256:
    # The last epoch in which a challenge on `epoch` may be answered.
    return epoch + report_delay + 1 + answer_epochs


@internal
@view
def _is_final(epoch: uint256) -> bool:
    # Written so that no epoch overflows: is_up / is_final of a far-future epoch is an
    # answer (not final), never a bare revert.
    current: uint256 = self._current_epoch()
    return epoch < current and current - epoch > report_delay + 1 + answer_epochs


@internal
@view
def _live_word(epoch: uint256, index: uint256) -> uint256:
    return self._live[epoch][index] & ~(self._disputed[epoch][index] & ~self._proven[epoch][index])


@internal
@view
def _live_bit(provider: address, epoch: uint256) -> bool:
    # Named by a validator's report, and not disputed or else proven (read for final epochs).
    index: uint256 = staticcall IProviderRegistry(registry).index_of(provider)
    if (self._live_word(epoch, index >> 8) >> (index & 255)) & 1 == 0:
        return False
    # index_of is 0 for an unregistered address too: the bit must be the caller's own
    return index != 0 or staticcall IProviderRegistry(registry).is_registered(provider) and staticcall IProviderRegistry(registry).provider_at(0) == provider


@internal
@view
def _is_up(provider: address, epoch: uint256) -> bool:
    if not self._is_final(epoch):
        return True
    if (self._beats[provider][epoch >> 8] >> (epoch & 255)) & 1 == 1:
        return True
    return self._live_bit(provider, epoch)


@internal
@view
def _beat_digest(provider: address, epoch: uint256) -> bytes32:
    return eip712_domain_separator._hash_typed_data_v4(
        keccak256(abi_encode(BEAT_TYPEHASH, provider, epoch, self.seed[epoch]))
    )


@internal
@view
def _receipt_digest(provider: address, validator: address, epoch: uint256) -> bytes32:
    return eip712_domain_separator._hash_typed_data_v4(
        keccak256(abi_encode(BEAT_RECEIPT_TYPEHASH, provider, validator, epoch))
    )


@internal
@view
def _opened_block(epoch: uint256) -> uint256:
    return convert(self.seed[epoch], uint256) & SEED_BLOCK_MASK


@internal
@view
def _may_receipt(validator: address, epoch: uint256) -> bool:
    # A validator now, or at the end of the block that opened the epoch: a receipt stays good
    # when its validator unbonds (or is slashed below the minimum) before the provider claims.
    # The opening block is always in the past here (the epoch is over, and a later timestamp is
    # a later block); the guard keeps stake_at's "block not yet final" out of reach anyway.
    if staticcall IValidators(validators).is_validator(validator):
        return True
    opened: uint256 = self._opened_block(epoch)
    if validator == empty(address) or opened >= block.number:
        return False
    return staticcall IValidators(validators).stake_at(validator, opened) > 0


@internal
@view
def _bond_for(named: uint256) -> uint256:
    return challenge_bond * ((named + NAMED_PER_BOND - 1) // NAMED_PER_BOND)


@internal
@view
def _answer_fee() -> uint256:
    # At most ANSWER_FEE_BPS of the bond in all, whatever the number named.
    return challenge_bond * ANSWER_FEE_BPS // 10_000 // NAMED_PER_BOND


@internal
@view
def _own_answer_from(epoch: uint256) -> uint256:
    # The start of the epoch after the answer window, less half of the answer-only epochs.
    return genesis + (self._answer_end(epoch) + 1) * epoch_length - answer_epochs * epoch_length // 2


@internal
def _pay(to: address, amount: uint256):
    if amount > 0:
        assert extcall IERC20(stake_token).transfer(to, amount, default_return_value=True), "uptime: bond transfer failed"


@internal
def _settle_answered(challenge_id: uint256, c: Challenge):
    # Every named beat was shown: the bond less the answer fees goes back to the challenger.
    self.challenges[challenge_id].state = ANSWERED
    rest: uint256 = c.bond - c.paid
    log ChallengeResolved(
        challenge_id=challenge_id,
        validator=c.validator,
        epoch=c.epoch,
        unanswered=0,
        slashed=0,
        to_challenger=0,
        burned=0,
        bond_returned=rest,
    )
    self._pay(c.challenger, rest)


@internal
def _set_beat(provider: address, epoch: uint256):
    word: uint256 = self._beats[provider][epoch >> 8]
    bit: uint256 = 1 << (epoch & 255)
    assert word & bit == 0, "uptime: already beat this epoch"
    self._beats[provider][epoch >> 8] = word | bit


@external
@view
def current_epoch() -> uint256:
    """
    @notice The epoch the current block's timestamp falls in.
    @return uint256 (block.timestamp - genesis) // epoch_length.
    """
    return self._current_epoch()


@external
@view
def epoch_start(epoch: uint256) -> uint256:
    """
    @notice The timestamp `epoch` starts.
    @param epoch The epoch.
    @return uint256 genesis + epoch * epoch_length.
    """
    return genesis + epoch * epoch_length


@external
@view
def beats(provider: address, epoch: uint256) -> bool:
    """
    @notice Whether `provider` sent a heartbeat (or claimed a receipt) for `epoch`.
    @param provider The provider's address.
    @param epoch The epoch.
    @return bool True if it did.
    """
    return (self._beats[provider][epoch >> 8] >> (epoch & 255)) & 1 == 1


@external
@view
def beat_word(provider: address, index: uint256) -> uint256:
    """
    @notice Heartbeats of epochs 256*index .. 256*index+255 as a bitmap (bit i = epoch
            256*index + i), so that a range of epochs costs one call per 256.
    @param provider The provider's address.
    @param index The 256-epoch word's index (epoch >> 8).
    @return uint256 The bitmap.
    """
    return self._beats[provider][index]


@external
@view
def live_word(epoch: uint256, index: uint256) -> uint256:
    """
    @notice The live bitmap of `epoch` for registry indices 256*index .. 256*index+255: the
            OR of the validators' reports less the providers whose inclusion was challenged and
            not (yet) answered: for a final epoch, what counts.
    @param epoch The epoch.
    @param index The 256-provider word's index (registry index >> 8).
    @return uint256 The bitmap.
    """
    return self._live_word(epoch, index)


@external
@view
def is_final(epoch: uint256) -> bool:
    """
    @notice Whether `epoch`'s liveness can no longer change: its reports, receipt claims and
            challenges are all over.
    @param epoch The epoch.
    @return bool True once current_epoch > epoch + report_delay + 1 + answer_epochs.
    """
    return self._is_final(epoch)


@external
@view
def is_up(provider: address, epoch: uint256) -> bool:
    """
    @notice Whether `provider` counts as up in `epoch`: a heartbeat, a claimed receipt or a
            validator's unrevoked report; an epoch not yet final counts as up.
    @param provider The provider's address.
    @param epoch The epoch.
    @return bool True if up (or not final).
    """
    return self._is_up(provider, epoch)


@external
@view
def beat_digest(provider: address, epoch: uint256) -> bytes32:
    """
    @notice The EIP-712 digest a provider signs to beat in `epoch` (it names the epoch's seed,
            so it cannot be made before the epoch is opened).
    @param provider The provider.
    @param epoch The epoch.
    @return bytes32 The digest of `Beat(provider, epoch, seed(epoch))`.
    """
    return self._beat_digest(provider, epoch)


@external
@view
def receipt_digest(provider: address, validator: address, epoch: uint256) -> bytes32:
    """
    @notice The EIP-712 digest a validator signs when it receives a provider's beat in time.
    @param provider The provider.
    @param validator The validator.
    @param epoch The epoch.
    @return bytes32 The digest of `BeatReceipt(provider, validator, epoch)`.
    """
    return self._receipt_digest(provider, validator, epoch)


@external
@view
def opened_block(epoch: uint256) -> uint256:
    """
    @notice The block in which `epoch` was opened (the low 64 bits of its seed): a receipt's
            validator counts for `claim_beat` if it was one at the end of that block.
    @param epoch The epoch.
    @return uint256 The block number, zero if the epoch was never opened.
    """
    return self._opened_block(epoch)


@external
@view
def challenge_bond_for(named: uint256) -> uint256:
    """
    @notice The bond of a challenge naming `named` providers: challenge_bond per
            NAMED_PER_BOND of them, rounded up.
    @param named The number of providers named.
    @return uint256 The bond in stake-token base units.
    """
    return self._bond_for(named)


@external
@view
def answer_fee() -> uint256:
    """
    @notice What each beat shown on a challenge pays its shower, from the bond.
    @return uint256 challenge_bond * ANSWER_FEE_BPS / 10_000 / NAMED_PER_BOND (stake-token base units).
    """
    return self._answer_fee()


@external
@view
def own_answer_from(epoch: uint256) -> uint256:
    """
    @notice From this block timestamp on, a named provider showing its own beat of `epoch`
            alone is paid its gas (an own answer, OWN_ANSWER_MAX_FEES fees at most) instead of
            one answer fee: the second half of the answer-only epochs, up to the end of epoch
            epoch + report_delay + 1 + answer_epochs (protocol.liveness.provider_answer_from).
    @param epoch The reported epoch.
    @return uint256 A block timestamp.
    """
    return self._own_answer_from(epoch)


@external
@view
def named_word(challenge_id: uint256, index: uint256) -> uint256:
    """
    @notice The providers a challenge names, registry indices 256*index .. 256*index+255.
    @param challenge_id The challenge.
    @param index The 256-provider word's index (registry index >> 8).
    @return uint256 The bitmap.
    """
    return self._named[challenge_id][index]


@external
@view
def challenged_word(validator: address, epoch: uint256, index: uint256) -> uint256:
    """
    @notice The inclusions of `validator`'s report on `epoch` already named by a challenge
            (none may be named again), registry indices 256*index .. 256*index+255.
    @param validator The reporting validator.
    @param epoch The reported epoch.
    @param index The 256-provider word's index (registry index >> 8).
    @return uint256 The bitmap.
    """
    return self._challenged[validator][epoch][index]


@external
@view
def proven_word(epoch: uint256, index: uint256) -> uint256:
    """
    @notice The challenged providers whose beat of `epoch` was shown in time on a challenge,
            registry indices 256*index .. 256*index+255.
    @param epoch The epoch.
    @param index The 256-provider word's index (registry index >> 8).
    @return uint256 The bitmap.
    """
    return self._proven[epoch][index]


@external
def open_epoch() -> bytes32:
    """
    @notice Anyone fixes the current epoch's seed once: the previous block's hash with its low
            64 bits replaced by this block's number. Beats of the epoch sign it. Idempotent.
    @return bytes32 The epoch's seed.
    """
    epoch: uint256 = self._current_epoch()
    current: bytes32 = self.seed[epoch]
    if current != empty(bytes32):
        return current
    # 192 bits of the hash are an unpredictable nonce; the block number is never zero here.
    current = convert(convert(blockhash(block.number - 1), uint256) & ~SEED_BLOCK_MASK | block.number, bytes32)
    self.seed[epoch] = current
    log EpochOpened(epoch=epoch, seed=current, opener=msg.sender)
    return current


@external
def heartbeat(epoch: uint256, recent_block_number: uint256, recent_block_hash: bytes32):
    """
    @notice A registered provider proves it is live in the current epoch by naming one of
            the last 256 blocks by number and hash. Once per epoch.
    @param epoch The current epoch (a heartbeat for any other epoch reverts).
    @param recent_block_number A block before this one, at most 256 blocks back.
    @param recent_block_hash That block's hash (checked with BLOCKHASH).
    """
    assert epoch == self._current_epoch(), "uptime: not the current epoch"
    assert recent_block_number < block.number, "uptime: block not in the past"
    assert block.number - recent_block_number <= 256, "uptime: block too old"
    assert blockhash(recent_block_number) == recent_block_hash, "uptime: wrong block hash"
    assert staticcall IProviderRegistry(registry).is_registered(msg.sender), "uptime: not registered"
    self._set_beat(msg.sender, epoch)
    log Heartbeat(provider=msg.sender, epoch=epoch, block_number=recent_block_number)


@external
def report_liveness(epoch: uint256, words: DynArray[uint256, MAX_LIVENESS_WORDS]):
    """
    @notice A validator posts, once per finished epoch, the providers whose beats it holds:
            bit i of words[j] is the provider with registry index 256*j + i. Accepted in
            epochs epoch+1 .. epoch+report_delay, for an opened epoch.
    @param epoch The finished epoch.
    @param words The bitmap (no bit at or beyond the registry's provider_count; not empty).
    """
    assert staticcall IValidators(validators).is_validator(msg.sender), "uptime: not a validator"
    current: uint256 = self._current_epoch()
    assert epoch < current, "uptime: epoch not over"
    assert current - epoch <= report_delay, "uptime: report too late"
    assert self.seed[epoch] != empty(bytes32), "uptime: epoch never opened"
    assert self.report_hash[msg.sender][epoch] == empty(bytes32), "uptime: already reported"
    count: uint256 = len(words)
    assert count > 0, "uptime: empty report"
    providers: uint256 = staticcall IProviderRegistry(registry).provider_count()
    assert (count - 1) * 256 < providers, "uptime: index beyond the registry"
    in_last_word: uint256 = providers - (count - 1) * 256
    assert in_last_word >= 256 or words[count - 1] >> in_last_word == 0, "uptime: index beyond the registry"
    for j: uint256 in range(MAX_LIVENESS_WORDS):
        if j == count:
            break
        w: uint256 = words[j]
        if w != 0:
            live: uint256 = self._live[epoch][j]
            if live | w != live:
                self._live[epoch][j] = live | w
    words_hash: bytes32 = keccak256(abi_encode(words))
    self.report_hash[msg.sender][epoch] = words_hash
    log LivenessReported(validator=msg.sender, epoch=epoch, words_hash=words_hash, words=words)


@external
def claim_beat(epoch: uint256, validator: address, receipt_signature: Bytes[65], beat_signature: Bytes[65]):
    """
    @notice A provider whose beat a validator receipted but did not report counts the epoch
            as up: the validator's receipt and the provider's own beat, until the end of epoch
            epoch + report_delay + 1.
    @param epoch The epoch.
    @param validator The validator that signed the receipt: a validator now, or at the end of
           the block that opened the epoch (one that has unbonded since still counts).
    @param receipt_signature The validator's `BeatReceipt(msg.sender, validator, epoch)`.
    @param beat_signature The caller's `Beat(msg.sender, epoch, seed(epoch))`.
    """
    current: uint256 = self._current_epoch()
    assert epoch < current, "uptime: epoch not over"
    assert current - epoch <= report_delay + 1, "uptime: claim too late"
    assert self.seed[epoch] != empty(bytes32), "uptime: epoch never opened"
    assert staticcall IProviderRegistry(registry).is_registered(msg.sender), "uptime: not registered"
    assert self._may_receipt(validator, epoch), "uptime: not a validator"
    assert signature.recover(self._receipt_digest(msg.sender, validator, epoch), receipt_signature) == validator, "uptime: receipt not signed by the validator"
    assert signature.recover(self._beat_digest(msg.sender, epoch), beat_signature) == msg.sender, "uptime: beat not signed by the provider"
    self._set_beat(msg.sender, epoch)
    log BeatClaimed(provider=msg.sender, epoch=epoch, validator=validator)


@external
def challenge_inclusions(
    validator: address,
    epoch: uint256,
    words: DynArray[uint256, MAX_LIVENESS_WORDS],
    named: DynArray[uint256, MAX_LIVENESS_WORDS],
) -> uint256:
    """
    @notice Anyone challenges a report's inclusions: for every provider in `named` whose beat
            signature nobody shows by the end of epoch epoch + report_delay + 1 +
            answer_epochs, the validator is slashed `inclusion_slash`. Inclusions another
            challenge named already are left out (so naming one first cannot void a set:
            front-running with a decoy only takes the decoy out); the rest is this challenge,
            as logged. Pulls challenge_bond_for(its providers) stake tokens (approve first).
            Open until the end of epoch epoch + report_delay + 1.
    @param validator The reporting validator.
    @param epoch The reported epoch.
    @param words The validator's report, exactly as logged (checked against its hash).
    @param named The providers challenged, as a bitmap of registry indices like `words`: a
           subset of the report with at least one not named before (challenged_word).
    @return uint256 The challenge id.
    """
    current: uint256 = self._current_epoch()
    assert epoch < current and current - epoch <= report_delay + 1, "uptime: challenge out of its window"
    stored: bytes32 = self.report_hash[validator][epoch]
    assert stored != empty(bytes32), "uptime: no such report"
    assert keccak256(abi_encode(words)) == stored, "uptime: words are not the report"
    assert len(named) <= len(words), "uptime: named words beyond the report"
    challenge_id: uint256 = self.challenge_count + 1
    count: uint256 = 0
    asked: bool = False
    fresh: DynArray[uint256, MAX_LIVENESS_WORDS] = []
    for j: uint256 in range(MAX_LIVENESS_WORDS):
        if j == len(named):
            break
        w: uint256 = named[j]
        if w != 0:
            asked = True
            assert w & ~words[j] == 0, "uptime: provider not in the report"
            taken: uint256 = self._challenged[validator][epoch][j]
            w = w & ~taken
            if w != 0:
                self._challenged[validator][epoch][j] = taken | w
                self._disputed[epoch][j] |= w
                self._named[challenge_id][j] = w
                count += bitcount.count(w)
        fresh.append(w)
    assert asked, "uptime: no provider named"
    assert count > 0, "uptime: every provider named was challenged already"
    bond: uint256 = self._bond_for(count)
    self.challenge_count = challenge_id
    self.challenges[challenge_id] = Challenge(
        validator=validator,
        epoch=epoch,
        challenger=msg.sender,
        bond=bond,
        named=count,
        answered=0,
        paid=0,
        words=len(fresh),
        state=OPEN,
    )
    answer_by: uint256 = self._answer_end(epoch)
    log InclusionsChallenged(
        challenge_id=challenge_id,
        validator=validator,
        epoch=epoch,
        challenger=msg.sender,
        named_count=count,
        bond=bond,
        answer_by_epoch=answer_by,
        named=fresh,
    )
    assert extcall IERC20(stake_token).transferFrom(msg.sender, self, bond, default_return_value=True), "uptime: bond transfer failed"
    return challenge_id


@external
def answer_challenge(
    challenge_id: uint256,
    providers: DynArray[address, MAX_ANSWERS],
    beat_signatures: DynArray[Bytes[65], MAX_ANSWERS],
):
    """
    @notice Anyone (the validator, a provider, another validator) answers an open challenge
            with named providers' beat signatures, in time. Each beat shown pays the caller
            the answer fee; a provider whose beat was shown already (on any challenge: one
            copied from this call's calldata and sent first, say) is skipped, unpaid, so that
            nobody can void a batch. An own answer (a named provider without code showing its
            own beat alone, from own_answer_from(epoch) on) is paid the gas it used at the
            fee's rate instead, one to OWN_ANSWER_MAX_FEES fees. Once every named beat is shown
            here, the rest of the bond goes back to the challenger.
    @param challenge_id The challenge.
    @param providers Named providers, at least one whose beat was not yet shown.
    @param beat_signatures Each provider's `Beat(provider, epoch, seed(epoch))`, in order.
    """
    start_gas: uint256 = msg.gas
    # The state and the epoch first, the rest of the record once something will be shown: an
    # answer that fails (its beats shown already, say by a griefer's batch just ahead of it)
    # costs its sender as little as possible.
    assert self.challenges[challenge_id].state == OPEN, "uptime: challenge not open"
    epoch: uint256 = self.challenges[challenge_id].epoch
    assert self._current_epoch() <= self._answer_end(epoch), "uptime: answer too late"
    assert len(providers) > 0, "uptime: no provider given"
    assert len(providers) == len(beat_signatures), "uptime: one signature per provider"
    # An own answer: the named provider itself, its beat alone, in the second half, sent from
    # an address without code (an EIP-7702-delegated provider could answer several challenges
    # in one transaction, each paid a transaction's own 21,000: it is paid one fee a beat).
    own: bool = len(providers) == 1 and providers[0] == msg.sender and not msg.sender.is_contract and block.timestamp >= self._own_answer_from(epoch)
    validator: address = self.challenges[challenge_id].validator
    fee: uint256 = self._answer_fee()
    shown: uint256 = 0
    for i: uint256 in range(MAX_ANSWERS):
        if i == len(providers):
            break
        provider: address = providers[i]
        assert staticcall IProviderRegistry(registry).is_registered(provider), "uptime: not registered"
        index: uint256 = staticcall IProviderRegistry(registry).index_of(provider)
        bit: uint256 = 1 << (index & 255)
        assert self._named[challenge_id][index >> 8] & bit != 0, "uptime: provider not named"
        proven: uint256 = self._proven[epoch][index >> 8]
        if proven & bit != 0:
            continue
        assert signature.recover(self._beat_digest(provider, epoch), beat_signatures[i]) == provider, "uptime: beat not signed by the provider"
        self._proven[epoch][index >> 8] = proven | bit
        if not own:
            log InclusionAnswered(
                challenge_id=challenge_id,
                validator=validator,
                provider=provider,
                epoch=epoch,
                answered_by=msg.sender,
                to_answerer=fee,
            )
        shown += 1
    assert shown > 0, "uptime: every beat given was shown already"
    c: Challenge = self.challenges[challenge_id]
    pay: uint256 = fee * shown
    c.answered += shown
    c.paid += pay
    self.challenges[challenge_id].answered = c.answered
    self.challenges[challenge_id].paid = c.paid
    if own:
        # The gas used so far (the first writes of a challenge's counters included) and what
        # follows, which costs the same whatever the caller sends: the transaction's own
        # 21,000 and calldata, the log, the transfer and, when this answer completes the
        # challenge, the settlement. At the answer fee's rate.
        tail: uint256 = OWN_ANSWER_OVERHEAD_GAS
        # A balance written from zero costs FRESH_BALANCE_GAS more (read here, so that the
        # transfers below find the slots warm: the constants assume it).
        if staticcall IERC20(stake_token).balanceOf(msg.sender) == 0:
            tail += FRESH_BALANCE_GAS
        if c.answered == c.named:
            tail += OWN_ANSWER_SETTLE_GAS
            if c.bond > c.paid and staticcall IERC20(stake_token).balanceOf(c.challenger) == 0:
                tail += FRESH_BALANCE_GAS
        used: uint256 = start_gas - msg.gas + tail
        pay = min(max(used * fee // ANSWER_FEE_GAS, fee), fee * OWN_ANSWER_MAX_FEES)
        c.paid += pay - fee
        self.challenges[challenge_id].paid = c.paid
        log InclusionAnswered(
            challenge_id=challenge_id,
            validator=validator,
            provider=msg.sender,
            epoch=epoch,
            answered_by=msg.sender,
            to_answerer=pay,
        )
    self._pay(msg.sender, pay)
    if c.answered == c.named:
        self._settle_answered(challenge_id, c)


@external
def resolve_challenge(challenge_id: uint256):
    """
    @notice Anyone resolves a challenge after its last answer epoch. Every named provider whose
            beat was not shown in time (here or on another challenge of the epoch) costs the
            validator `inclusion_slash`: CHALLENGER_SHARE_BPS of what is slashed goes to the
            challenger, the rest is burned. (Those providers' live bits stopped counting when
            the epoch became final.) Either way the bond less the answer fees goes back to the
            challenger.
    @param challenge_id The challenge.
    """
    c: Challenge = self.challenges[challenge_id]
    assert c.state == OPEN, "uptime: challenge not open"
    assert self._current_epoch() > self._answer_end(c.epoch), "uptime: answer time not over"
    unanswered: uint256 = 0
    for j: uint256 in range(MAX_LIVENESS_WORDS):
        if j == c.words:
            break
        unanswered += bitcount.count(self._named[challenge_id][j] & ~self._proven[c.epoch][j])
    if unanswered == 0:
        self._settle_answered(challenge_id, c)
        return
    self.challenges[challenge_id].state = RESOLVED
    slashed: uint256 = 0
    # Guarded like the Market's slash: a revoked slasher role must not strand the bond.
    if inclusion_slash > 0 and staticcall IValidators(validators).is_slasher(self):
        # Saturating: an inclusion_slash meant as "all of it" (Validators.slash takes at most
        # what the validator has) must not overflow and strand the bond.
        amount: uint256 = max_value(uint256)
        if inclusion_slash <= max_value(uint256) // unanswered:
            amount = inclusion_slash * unanswered
        slashed = extcall IValidators(validators).slash(c.validator, amount, self)
    reward: uint256 = slashed * CHALLENGER_SHARE_BPS // 10_000
    rest: uint256 = c.bond - c.paid
    log ChallengeResolved(
        challenge_id=challenge_id,
        validator=c.validator,
        epoch=c.epoch,
        unanswered=unanswered,
        slashed=slashed,
        to_challenger=reward,
        burned=slashed - reward,
        bond_returned=rest,
    )
    if slashed > reward:
        extcall IStakeToken(stake_token).burn(slashed - reward)
    self._pay(c.challenger, rest + reward)


@external
def report_outage(provider: address, first_epoch: uint256):
    """
    @notice Anyone reports that `provider` was not up (`is_up`) in the `jail_after`
            consecutive epochs starting at `first_epoch`; the registry jails it until
            `jail_period` seconds from now (never shortening a longer jail). The epochs must
            all be final, lie wholly after the registration, not overlap an outage already
            reported, and the last of them be at most `jail_after` epochs from final.
    @param provider The provider reported.
    @param first_epoch The first of the `jail_after` epochs without a heartbeat.
    """
    info: IProviderRegistry.Provider = staticcall IProviderRegistry(registry).providers(provider)
    assert info.registered_at != 0, "uptime: not registered"
    # first_epoch is checked before it is added to (a huge one reads "not final", not overflow)
    assert first_epoch < self._current_epoch(), "uptime: outage epochs not final"
    end: uint256 = first_epoch + jail_after
    assert self._is_final(end - 1), "uptime: outage epochs not final"
    assert self._current_epoch() - self._answer_end(end - 1) <= jail_after + 1, "uptime: outage too old to report"
    assert genesis + first_epoch * epoch_length >= info.registered_at, "uptime: epoch before registration"
    assert first_epoch >= self.reported_until[provider], "uptime: outage already reported"
    for i: uint256 in range(MAX_JAIL_AFTER):
        if i == jail_after:
            break
        assert not self._is_up(provider, first_epoch + i), "uptime: provider was up in that stretch"
    self.reported_until[provider] = end
    until: uint256 = max(block.timestamp + jail_period, info.jailed_until)
    log OutageReported(
        provider=provider, first_epoch=first_epoch, last_epoch=end - 1, jailed_until=until, reporter=msg.sender
    )
    extcall IProviderRegistry(registry).jail(provider, until)
