# pragma version ~=0.4.3
"""
@title Tessera uptime heartbeats
@license GNU Affero General Public License v3.0 or later
@notice A registered provider proves liveness once per epoch by naming a recent block
        (number and hash, checked with BLOCKHASH). Epoch = (block.timestamp - genesis) //
        epoch_length, genesis = deploy time. One storage write per heartbeat: a bit in the
        provider's 256-epoch bitmap word. Uptime is recomputed off chain from `Heartbeat` logs
        (docs/uptime.md). Anyone may report `jail_after` consecutive whole epochs without a
        heartbeat: the provider is jailed through the registry (this contract holds the
        slasher role) for `jail_period` seconds, once per reported stretch of epochs.
"""

from .interfaces import IProviderRegistry

from .interfaces import IUptime
implements: IUptime


event UptimeStarted:
    registry: indexed(address)
    genesis: uint256
    epoch_length: uint256
    jail_after: uint256
    jail_period: uint256


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


# Upper bound of the loop in `report_outage` (Vyper loops need a constant bound).
MAX_JAIL_AFTER: public(constant(uint256)) = 1_024

registry: public(immutable(address))
genesis: public(immutable(uint256))
epoch_length: public(immutable(uint256))
jail_after: public(immutable(uint256))
jail_period: public(immutable(uint256))

# provider -> epoch // 256 -> bitmap of the epochs with a heartbeat
_beats: HashMap[address, HashMap[uint256, uint256]]
# provider -> first epoch not covered by an already reported outage
reported_until: public(HashMap[address, uint256])


@deploy
def __init__(registry_: address, epoch_length_: uint256, jail_after_: uint256, jail_period_: uint256):
    """
    @notice Epoch 0 starts now. Grant this contract the registry's slasher role so that
            `report_outage` can jail.
    @param registry_ The ProviderRegistry whose providers send heartbeats.
    @param epoch_length_ Seconds per epoch (more than zero).
    @param jail_after_ Consecutive missed epochs that can be reported (1 .. MAX_JAIL_AFTER).
    @param jail_period_ Seconds a reported provider is jailed for (more than zero).
    """
    assert registry_ != empty(address), "uptime: zero registry"
    assert epoch_length_ > 0, "uptime: zero epoch length"
    assert jail_after_ > 0 and jail_after_ <= MAX_JAIL_AFTER, "uptime: jail_after out of range"
    assert jail_period_ > 0, "uptime: zero jail period"
    registry = registry_
    genesis = block.timestamp
    epoch_length = epoch_length_
    jail_after = jail_after_
    jail_period = jail_period_
    log UptimeStarted(
        registry=registry_,
        genesis=block.timestamp,
        epoch_length=epoch_length_,
        jail_after=jail_after_,
        jail_period=jail_period_,
    )


@internal
@view
def _current_epoch() -> uint256:
    return (block.timestamp - genesis) // epoch_length


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
    @notice Whether `provider` sent a heartbeat in `epoch`.
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
    word: uint256 = self._beats[msg.sender][epoch >> 8]
    bit: uint256 = 1 << (epoch & 255)
    assert word & bit == 0, "uptime: already beat this epoch"
    self._beats[msg.sender][epoch >> 8] = word | bit
    log Heartbeat(provider=msg.sender, epoch=epoch, block_number=recent_block_number)


@external
def report_outage(provider: address, first_epoch: uint256):
    """
    @notice Anyone reports that `provider` sent no heartbeat in the `jail_after` consecutive
            epochs starting at `first_epoch`; the registry jails it until `jail_period` seconds
            from now (never shortening a longer jail). The epochs must all have ended, lie
            wholly after the registration, and not overlap an outage already reported.
    @param provider The provider reported.
    @param first_epoch The first of the `jail_after` epochs without a heartbeat.
    """
    info: IProviderRegistry.Provider = staticcall IProviderRegistry(registry).providers(provider)
    assert info.registered_at != 0, "uptime: not registered"
    now_epoch: uint256 = self._current_epoch()
    assert first_epoch <= now_epoch and now_epoch - first_epoch >= jail_after, "uptime: outage epochs not ended"
    end: uint256 = first_epoch + jail_after
    assert now_epoch - end <= jail_after, "uptime: outage too old to report"
    assert genesis + first_epoch * epoch_length >= info.registered_at, "uptime: epoch before registration"
    assert first_epoch >= self.reported_until[provider], "uptime: outage already reported"
    word: uint256 = 0
    for i: uint256 in range(MAX_JAIL_AFTER):
        if i == jail_after:
            break
        epoch: uint256 = first_epoch + i
        if i == 0 or epoch & 255 == 0:
            word = self._beats[provider][epoch >> 8]
        assert (word >> (epoch & 255)) & 1 == 0, "uptime: provider beat in that stretch"
    self.reported_until[provider] = end
    until: uint256 = max(block.timestamp + jail_period, info.jailed_until)
    log OutageReported(
        provider=provider, first_epoch=first_epoch, last_epoch=end - 1, jailed_until=until, reporter=msg.sender
    )
    extcall IProviderRegistry(registry).jail(provider, until)
