# pragma version ~=0.4.3
"""
@title Tessera bit count
@license GNU Affero General Public License v3.0 or later
@notice The number of set bits of a uint256 (a stateless module: it inlines into each contract
        that uses it), by adding neighbouring fields of 1, 2, 4 ... 128 bits: no loop, no
        multiplication, so its gas is the same for every word (about 200).
"""

# Alternating fields of 1, 2, 4 ... 128 ones and zeros (0x5555..., 0x3333..., 0x0F0F...).
M1: constant(uint256) = max_value(uint256) // 3
M2: constant(uint256) = max_value(uint256) // 5
M4: constant(uint256) = max_value(uint256) // 17
M8: constant(uint256) = max_value(uint256) // 257
M16: constant(uint256) = max_value(uint256) // 65_537
M32: constant(uint256) = max_value(uint256) // (2**32 + 1)
M64: constant(uint256) = max_value(uint256) // (2**64 + 1)
M128: constant(uint256) = max_value(uint256) // (2**128 + 1)


@internal
@pure
def count(word: uint256) -> uint256:
    # Every field's sum fits its width (a field of 2^k bits holds at most 2^k, below 2^(2^k)),
    # so no addition carries into the next field.
    x: uint256 = (word & M1) + ((word >> 1) & M1)
    x = (x & M2) + ((x >> 2) & M2)
    x = (x & M4) + ((x >> 4) & M4)
    x = (x & M8) + ((x >> 8) & M8)
    x = (x & M16) + ((x >> 16) & M16)
    x = (x & M32) + ((x >> 32) & M32)
    x = (x & M64) + ((x >> 64) & M64)
    return (x & M128) + (x >> 128)
