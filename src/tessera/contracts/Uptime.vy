# pragma version ~=0.4.3
"""
@title Tessera uptime heartbeats
@license GNU Affero General Public License v3.0 or later
@notice A registered provider proves liveness once per epoch by naming a recent block
        (number and hash, checked with BLOCKHASH). Epoch = (block.timestamp - genesis) //
        epoch_length, genesis = deploy time. One storage write per heartbeat: a bit in the
        provider's 256-epoch bitmap word. Uptime is recomputed off chain from `Heartbeat` logs
        (docs/uptime.md).
"""


interface IProviderRegistry:
    def is_registered(provider: address) -> bool: view


event UptimeStarted:
    registry: indexed(address)
    genesis: uint256
    epoch_length: uint256


event Heartbeat:
    provider: indexed(address)
    epoch: indexed(uint256)
    block_number: uint256


registry: public(immutable(address))
genesis: public(immutable(uint256))
epoch_length: public(immutable(uint256))

# provider -> epoch // 256 -> bitmap of the epochs with a heartbeat
_beats: HashMap[address, HashMap[uint256, uint256]]


@deploy
def __init__(registry_: address, epoch_length_: uint256):
    assert registry_ != empty(address), "uptime: zero registry"
    assert epoch_length_ > 0, "uptime: zero epoch length"
    registry = registry_
    genesis = block.timestamp
    epoch_length = epoch_length_
    log UptimeStarted(registry=registry_, genesis=block.timestamp, epoch_length=epoch_length_)


@internal
@view
def _current_epoch() -> uint256:
    return (block.timestamp - genesis) // epoch_length


@external
@view
def current_epoch() -> uint256:
    return self._current_epoch()


@external
@view
def epoch_start(epoch: uint256) -> uint256:
    return genesis + epoch * epoch_length


@external
@view
def beats(provider: address, epoch: uint256) -> bool:
    return (self._beats[provider][epoch >> 8] >> (epoch & 255)) & 1 == 1


@external
def heartbeat(epoch: uint256, recent_block_number: uint256, recent_block_hash: bytes32):
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
