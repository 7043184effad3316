# pragma version ~=0.4.3
"""
@title Tessera payment token (TUSD, 6 decimals)
@license GNU Affero General Public License v3.0 or later
@notice snekmate ERC-20 (with EIP-2612 permit, owner and minter role) plus
        EIP-3009 transfer/receive with authorization, so that x402 clients can
        pay with a single signed message. EIP-3009 uses the same EIP-712 domain
        as permit (`DOMAIN_SEPARATOR()`).
"""

from ethereum.ercs import IERC20
implements: IERC20

from ethereum.ercs import IERC20Detailed
implements: IERC20Detailed

from snekmate.auth import ownable as ow
initializes: ow

from snekmate.tokens import erc20
initializes: erc20[ownable := ow]

from snekmate.utils import ecdsa

exports: erc20.__interface__


# keccak256("TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)")
TRANSFER_WITH_AUTHORIZATION_TYPEHASH: public(constant(bytes32)) = keccak256(
    "TransferWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)"
)
# keccak256("ReceiveWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)")
RECEIVE_WITH_AUTHORIZATION_TYPEHASH: public(constant(bytes32)) = keccak256(
    "ReceiveWithAuthorization(address from,address to,uint256 value,uint256 validAfter,uint256 validBefore,bytes32 nonce)"
)
# keccak256("CancelAuthorization(address authorizer,bytes32 nonce)")
CANCEL_AUTHORIZATION_TYPEHASH: public(constant(bytes32)) = keccak256(
    "CancelAuthorization(address authorizer,bytes32 nonce)"
)

# authorizer => nonce => used or cancelled
authorizationState: public(HashMap[address, HashMap[bytes32, bool]])


event AuthorizationUsed:
    authorizer: indexed(address)
    nonce: indexed(bytes32)


event AuthorizationCanceled:
    authorizer: indexed(address)
    nonce: indexed(bytes32)


@deploy
def __init__(name_: String[25], symbol_: String[5], decimals_: uint8, name_eip712_: String[50], version_eip712_: String[20]):
    """
    @notice The deployer becomes the owner and a minter; no tokens exist yet.
    @param name_ The token name (ERC-20 `name`).
    @param symbol_ The token symbol (ERC-20 `symbol`).
    @param decimals_ The token decimals.
    @param name_eip712_ The EIP-712 domain name (permit and EIP-3009).
    @param version_eip712_ The EIP-712 domain version.
    """
    ow.__init__()
    erc20.__init__(name_, symbol_, decimals_, name_eip712_, version_eip712_)


@internal
def _use_authorization(
    type_hash: bytes32,
    sender: address,
    to: address,
    amount: uint256,
    valid_after: uint256,
    valid_before: uint256,
    nonce: bytes32,
    v: uint8,
    r: bytes32,
    s: bytes32,
):
    assert block.timestamp > valid_after, "token: authorization not yet valid"
    assert block.timestamp < valid_before, "token: authorization expired"
    assert not self.authorizationState[sender][nonce], "token: authorization used or canceled"

    struct_hash: bytes32 = keccak256(abi_encode(type_hash, sender, to, amount, valid_after, valid_before, nonce))
    digest: bytes32 = erc20.eip712_domain_separator._hash_typed_data_v4(struct_hash)
    signer: address = ecdsa._recover_vrs(digest, convert(v, uint256), convert(r, uint256), convert(s, uint256))
    assert signer != empty(address) and signer == sender, "token: invalid signature"

    self.authorizationState[sender][nonce] = True
    log AuthorizationUsed(authorizer=sender, nonce=nonce)
    erc20._transfer(sender, to, amount)


@external
def transferWithAuthorization(
    _from: address,
    to: address,
    amount: uint256,
    validAfter: uint256,
    validBefore: uint256,
    nonce: bytes32,
    v: uint8,
    r: bytes32,
    s: bytes32,
):
    """
    @notice EIP-3009: anyone may submit `_from`'s signed authorization to move
            `amount` to `to`, valid strictly between `validAfter` and `validBefore`.
    @param _from The authorizer, whose tokens move (the signer).
    @param to The payee.
    @param amount The amount, in base units.
    @param validAfter The authorization is valid strictly after this timestamp.
    @param validBefore The authorization is valid strictly before this timestamp.
    @param nonce A unique 32-byte nonce chosen by the authorizer.
    @param v The secp256k1 1-byte signature parameter `v`.
    @param r The secp256k1 32-byte signature parameter `r`.
    @param s The secp256k1 32-byte signature parameter `s`.
    """
    self._use_authorization(
        TRANSFER_WITH_AUTHORIZATION_TYPEHASH, _from, to, amount, validAfter, validBefore, nonce, v, r, s
    )


@external
def receiveWithAuthorization(
    _from: address,
    to: address,
    amount: uint256,
    validAfter: uint256,
    validBefore: uint256,
    nonce: bytes32,
    v: uint8,
    r: bytes32,
    s: bytes32,
):
    """
    @notice EIP-3009: like `transferWithAuthorization`, but only the payee `to`
            may submit it (protects against front-running a deposit call).
    @param _from The authorizer, whose tokens move (the signer).
    @param to The payee.
    @param amount The amount, in base units.
    @param validAfter The authorization is valid strictly after this timestamp.
    @param validBefore The authorization is valid strictly before this timestamp.
    @param nonce A unique 32-byte nonce chosen by the authorizer.
    @param v The secp256k1 1-byte signature parameter `v`.
    @param r The secp256k1 32-byte signature parameter `r`.
    @param s The secp256k1 32-byte signature parameter `s`.
    """
    assert msg.sender == to, "token: caller must be the payee"
    self._use_authorization(
        RECEIVE_WITH_AUTHORIZATION_TYPEHASH, _from, to, amount, validAfter, validBefore, nonce, v, r, s
    )


@external
def cancelAuthorization(authorizer: address, nonce: bytes32, v: uint8, r: bytes32, s: bytes32):
    """
    @notice EIP-3009: the authorizer cancels an unused authorization by signature.
    @param authorizer The authorizer (the signer).
    @param nonce The nonce of the authorization to cancel.
    @param v The secp256k1 1-byte signature parameter `v`.
    @param r The secp256k1 32-byte signature parameter `r`.
    @param s The secp256k1 32-byte signature parameter `s`.
    """
    assert not self.authorizationState[authorizer][nonce], "token: authorization used or canceled"
    struct_hash: bytes32 = keccak256(abi_encode(CANCEL_AUTHORIZATION_TYPEHASH, authorizer, nonce))
    digest: bytes32 = erc20.eip712_domain_separator._hash_typed_data_v4(struct_hash)
    signer: address = ecdsa._recover_vrs(digest, convert(v, uint256), convert(r, uint256), convert(s, uint256))
    assert signer != empty(address) and signer == authorizer, "token: invalid signature"
    self.authorizationState[authorizer][nonce] = True
    log AuthorizationCanceled(authorizer=authorizer, nonce=nonce)
