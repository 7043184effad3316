# pragma version ~=0.4.3
"""
@title Tessera signature recovery
@license GNU Affero General Public License v3.0 or later
@notice One rule for a 65-byte ECDSA signature over an EIP-712 digest (a stateless module: it
        inlines into each contract that uses it): 65 bytes only (no EIP-2098 short form), v in
        {27, 28}, low s (EIP-2, snekmate's malleability threshold), a nonzero signer; every
        malformed signature reads "bad signature".
"""

from snekmate.utils import ecdsa


@internal
@pure
def recover(digest: bytes32, signature: Bytes[65]) -> address:
    assert len(signature) == 65, "bad signature"
    v: uint256 = convert(slice(signature, 64, 1), uint256)
    s: uint256 = extract32(signature, 32, output_type=uint256)
    assert (v == 27 or v == 28) and s <= ecdsa._MALLEABILITY_THRESHOLD, "bad signature"
    signer: address = ecrecover(digest, v, extract32(signature, 0, output_type=uint256), s)
    assert signer != empty(address), "bad signature"
    return signer
