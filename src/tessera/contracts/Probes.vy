# pragma version ~=0.4.3
"""
@title Tessera probe reports
@license GNU Affero General Public License v3.0 or later
@notice Validators probe providers' endpoints off chain with random challenges; a provider
        that answers signs an EIP-712 `ProbeReceipt` (domain: this contract). Once an epoch is
        over, each registered validator posts ONE report for it: the Merkle root of its
        receipts (leaf format in docs/validators.md) and, per provider, how many probes were
        answered and missed. Epochs are Uptime's (same genesis and length). One storage write
        per report (a bit in the validator's 256-epoch bitmap word); the per-provider counts
        live only in `ProbeTally` logs, from which anyone recomputes the figures.
        A count is the validator's word: see docs/validators.md for what it proves.
"""

from snekmate.utils import eip712_domain_separator
initializes: eip712_domain_separator

exports: eip712_domain_separator.eip712Domain

from .interfaces import IProviderRegistry
from .interfaces import IUptime
from .interfaces import IValidators


struct Tally:
    provider: address
    answered: uint32
    missed: uint32


event ProbesStarted:
    validators: indexed(address)
    uptime: indexed(address)
    registry: address
    genesis: uint256
    epoch_length: uint256
    max_report_delay: uint256


event ProbeReport:
    validator: indexed(address)
    epoch: indexed(uint256)
    receipts_root: bytes32
    receipt_count: uint256
    provider_count: uint256
    answered_total: uint256
    missed_total: uint256


event ProbeTally:
    validator: indexed(address)
    provider: indexed(address)
    epoch: indexed(uint256)
    answered: uint256
    missed: uint256


# The tallies argument is copied into memory at its full bound, so the bound costs gas on every
# report (about 3.4k gas at 256, 9k at 512); a validator samples when more providers are active.
MAX_PROVIDERS: public(constant(uint256)) = 256
PROBE_RECEIPT_TYPEHASH: public(constant(bytes32)) = keccak256(
    "ProbeReceipt(address provider,address validator,uint256 epoch,bytes32 challenge,uint256 deadline)"
)

validators: public(immutable(address))
uptime: public(immutable(address))
registry: public(immutable(address))
genesis: public(immutable(uint256))
epoch_length: public(immutable(uint256))
# a report for epoch e is accepted while current_epoch - e <= max_report_delay
max_report_delay: public(immutable(uint256))

# validator -> epoch // 256 -> bitmap of the epochs it has reported
_reported: HashMap[address, HashMap[uint256, uint256]]


@deploy
def __init__(validators_: address, uptime_: address, max_report_delay_: uint256):
    """
    @notice The registry and the epoch clock are read from Uptime. The EIP-712 domain of
            probe receipts is ("TesseraProbes", "1", chain id, this contract).
    @param validators_ The Validators registry (who may report).
    @param uptime_ The Uptime contract.
    @param max_report_delay_ How many epochs after an epoch its report is still accepted
           (more than zero).
    """
    assert validators_ != empty(address), "probes: zero validators"
    assert uptime_ != empty(address), "probes: zero uptime"
    assert max_report_delay_ > 0, "probes: zero report delay"
    eip712_domain_separator.__init__("TesseraProbes", "1")
    validators = validators_
    uptime = uptime_
    registry = staticcall IUptime(uptime_).registry()
    genesis = staticcall IUptime(uptime_).genesis()
    epoch_length = staticcall IUptime(uptime_).epoch_length()
    max_report_delay = max_report_delay_
    log ProbesStarted(
        validators=validators_,
        uptime=uptime_,
        registry=registry,
        genesis=genesis,
        epoch_length=epoch_length,
        max_report_delay=max_report_delay_,
    )


@internal
@view
def _current_epoch() -> uint256:
    return (block.timestamp - genesis) // epoch_length


@external
@view
def current_epoch() -> uint256:
    """
    @notice The epoch the current block's timestamp falls in (Uptime's epochs).
    @return uint256 (block.timestamp - genesis) // epoch_length.
    """
    return self._current_epoch()


@external
@view
def reported(validator: address, epoch: uint256) -> bool:
    """
    @notice Whether `validator` has posted its report for `epoch`.
    @param validator The validator's address.
    @param epoch The epoch.
    @return bool True if it has.
    """
    return (self._reported[validator][epoch >> 8] >> (epoch & 255)) & 1 == 1


@external
@view
def receipt_digest(provider: address, validator: address, epoch: uint256, challenge: bytes32, deadline: uint256) -> bytes32:
    """
    @notice The EIP-712 digest a provider signs to answer a probe (for cross-checking).
    @param provider The provider probed.
    @param validator The validator probing.
    @param epoch The epoch of the probe.
    @param challenge The validator's random challenge.
    @param deadline The timestamp by which the answer was due.
    @return bytes32 The digest of the `ProbeReceipt`.
    """
    return eip712_domain_separator._hash_typed_data_v4(
        keccak256(abi_encode(PROBE_RECEIPT_TYPEHASH, provider, validator, epoch, challenge, deadline))
    )


@external
def report(epoch: uint256, receipts_root: bytes32, receipt_count: uint256, tallies: DynArray[Tally, MAX_PROVIDERS]):
    """
    @notice Post this validator's probe results for a finished epoch, once per epoch,
            at most `max_report_delay` epochs after it.
    @param epoch The finished epoch reported.
    @param receipts_root The Merkle root of the validator's receipts (not zero).
    @param receipt_count The number of leaves under `receipts_root`: it must equal the
           probes counted in `tallies`.
    @param tallies Answered and missed probes per provider, sorted by provider address,
           strictly increasing (no duplicates), each naming a registered provider with at
           least one probe; not empty.
    """
    assert staticcall IValidators(validators).is_validator(msg.sender), "probes: not a validator"
    current: uint256 = self._current_epoch()
    assert epoch < current, "probes: epoch not over"
    assert current - epoch <= max_report_delay, "probes: epoch too old"
    word: uint256 = self._reported[msg.sender][epoch >> 8]
    bit: uint256 = 1 << (epoch & 255)
    assert word & bit == 0, "probes: already reported"
    assert receipts_root != empty(bytes32), "probes: empty root"
    assert len(tallies) > 0, "probes: no tallies"

    answered_total: uint256 = 0
    missed_total: uint256 = 0
    previous: address = empty(address)
    for t: Tally in tallies:
        assert convert(t.provider, uint160) > convert(previous, uint160), "probes: providers not sorted"
        previous = t.provider
        answered: uint256 = convert(t.answered, uint256)
        missed: uint256 = convert(t.missed, uint256)
        assert answered + missed > 0, "probes: empty tally"
        assert staticcall IProviderRegistry(registry).is_registered(t.provider), "probes: unknown provider"
        answered_total += answered
        missed_total += missed
        log ProbeTally(validator=msg.sender, provider=t.provider, epoch=epoch, answered=answered, missed=missed)
    assert receipt_count == answered_total + missed_total, "probes: receipt count mismatch"

    self._reported[msg.sender][epoch >> 8] = word | bit
    log ProbeReport(
        validator=msg.sender,
        epoch=epoch,
        receipts_root=receipts_root,
        receipt_count=receipt_count,
        provider_count=len(tallies),
        answered_total=answered_total,
        missed_total=missed_total,
    )
