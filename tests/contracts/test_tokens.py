"""PaymentToken (ERC-20 + EIP-2612 + EIP-3009) and StakeToken."""

from __future__ import annotations

import os

import boa
import pytest
from contracts_support import PERMIT_TYPE, USD, _typed, _vrs, events, key_account, typed_digest
from eth_account import Account

AUTH_FIELDS = [
    {"name": "from", "type": "address"},
    {"name": "to", "type": "address"},
    {"name": "value", "type": "uint256"},
    {"name": "validAfter", "type": "uint256"},
    {"name": "validBefore", "type": "uint256"},
    {"name": "nonce", "type": "bytes32"},
]
CANCEL_TYPE = [
    {"name": "authorizer", "type": "address"},
    {"name": "nonce", "type": "bytes32"},
]


def _auth(token, signer, to, value, after, before, nonce, primary="TransferWithAuthorization"):
    typed = _typed(token, primary, AUTH_FIELDS, {
        "from": signer.address, "to": str(to), "value": value, "validAfter": after,
        "validBefore": before, "nonce": nonce})
    return _vrs(signer, typed)


# -- metadata, mint -----------------------------------------------------------------------

def test_metadata(system):
    usd, stake = system.usd, system.stake
    assert (usd.name(), usd.symbol(), usd.decimals()) == ("Tessera USD", "TUSD", 6)
    assert (stake.name(), stake.symbol(), stake.decimals()) == ("Tessera Stake", "TSTK", 18)
    assert usd.owner() == system.owner and usd.is_minter(system.owner)
    typehash = usd.TRANSFER_WITH_AUTHORIZATION_TYPEHASH()
    assert typehash.hex() == "7c7c6cdb67a18743f49ec6fa9b35f50d52ed05cbed4cc592e13b44501c1a2267"
    assert usd.RECEIVE_WITH_AUTHORIZATION_TYPEHASH().hex() == (
        "d099cc98ef71107a616c4f0f941f04c322d8e254fe26b3c6668db87aae413de8")
    assert usd.CANCEL_AUTHORIZATION_TYPEHASH().hex() == (
        "158b0a9edf7a828aad02f63cd515c68ef2f50ba807396f6d12842833a1597429")


def test_domain_separator_matches_eth_account(system):
    usd = system.usd
    typed = _typed(usd, "CancelAuthorization", CANCEL_TYPE,
                   {"authorizer": system.tenant.address, "nonce": b"\x01" * 32})
    from eth_account.messages import encode_typed_data

    assert usd.DOMAIN_SEPARATOR() == encode_typed_data(full_message=typed).header


@pytest.mark.parametrize("token_name", ["usd", "stake"])
def test_only_minter_mints(system, token_name):
    token = getattr(system, token_name)
    with boa.env.prank(system.outsider.address), boa.reverts("erc20: access is denied"):
        token.mint(system.outsider.address, 1)
    with boa.env.prank(system.outsider.address), boa.reverts():
        token.set_minter(system.outsider.address, True)
    token.set_minter(system.outsider.address, True)
    with boa.env.prank(system.outsider.address):
        token.mint(system.outsider.address, 5)


def test_transfer_and_transfer_from(system):
    usd, a, b = system.usd, system.tenant, system.tenant2
    before = usd.balanceOf(b.address)
    with boa.env.prank(a.address):
        usd.transfer(b.address, 3 * USD)
    assert usd.balanceOf(b.address) == before + 3 * USD
    with boa.env.prank(system.outsider.address), boa.reverts("erc20: insufficient allowance"):
        usd.transferFrom(a.address, b.address, 1)


# -- EIP-2612 permit ----------------------------------------------------------------------

def test_permit_then_replay_and_expiry(system):
    usd, owner, spender = system.usd, key_account(50), system.outsider.address
    deadline = boa.env.timestamp + 600
    typed = _typed(usd, "Permit", PERMIT_TYPE, {
        "owner": owner.address, "spender": spender, "value": 7 * USD, "nonce": 0,
        "deadline": deadline})
    v, r, s = _vrs(owner, typed)
    usd.permit(owner.address, spender, 7 * USD, deadline, v, r, s)
    assert usd.allowance(owner.address, spender) == 7 * USD
    assert usd.nonces(owner.address) == 1
    with boa.reverts("erc20: invalid signature"):  # replay: nonce moved on
        usd.permit(owner.address, spender, 7 * USD, deadline, v, r, s)

    typed["message"]["nonce"] = 1
    v, r, s = _vrs(owner, typed)
    boa.env.time_travel(seconds=601)
    with boa.reverts("erc20: expired deadline"):
        usd.permit(owner.address, spender, 7 * USD, deadline, v, r, s)


def test_permit_signed_by_other_key_refused(system):
    usd, owner = system.usd, key_account(50)
    deadline = boa.env.timestamp + 600
    typed = _typed(usd, "Permit", PERMIT_TYPE, {"owner": owner.address, "spender": owner.address,
                                                 "value": 1, "nonce": 0, "deadline": deadline})
    v, r, s = _vrs(key_account(51), typed)
    with boa.reverts("erc20: invalid signature"):
        usd.permit(owner.address, owner.address, 1, deadline, v, r, s)


# -- EIP-3009 -----------------------------------------------------------------------------

def test_transfer_with_authorization(system):
    usd, payer, payee = system.usd, system.tenant, system.outsider
    nonce = os.urandom(32)
    now = boa.env.timestamp
    v, r, s = _auth(usd, payer, payee.address, 5 * USD, 0, now + 60, nonce)
    before = usd.balanceOf(payee.address)
    assert not usd.authorizationState(payer.address, nonce)
    # anyone (a relayer) may submit it
    with boa.env.prank(system.treasury):
        usd.transferWithAuthorization(payer.address, payee.address, 5 * USD, 0, now + 60, nonce,
                                      v, r, s)
    (ev,) = events(usd, "AuthorizationUsed")
    assert (ev.authorizer, ev.nonce) == (payer.address, nonce)
    assert usd.balanceOf(payee.address) == before + 5 * USD
    assert usd.authorizationState(payer.address, nonce)
    with boa.reverts("token: authorization used or canceled"):
        usd.transferWithAuthorization(payer.address, payee.address, 5 * USD, 0, now + 60, nonce,
                                      v, r, s)


def test_transfer_with_authorization_time_window(system):
    usd, payer, payee = system.usd, system.tenant, system.outsider
    now = boa.env.timestamp
    nonce = b"\x02" * 32
    v, r, s = _auth(usd, payer, payee.address, USD, now + 100, now + 200, nonce)
    with boa.reverts("token: authorization not yet valid"):
        usd.transferWithAuthorization(payer.address, payee.address, USD, now + 100, now + 200,
                                      nonce, v, r, s)
    boa.env.time_travel(seconds=201)
    with boa.reverts("token: authorization expired"):
        usd.transferWithAuthorization(payer.address, payee.address, USD, now + 100, now + 200,
                                      nonce, v, r, s)


def test_transfer_with_authorization_bad_signature(system):
    usd, payer, payee = system.usd, system.tenant, system.outsider
    before = boa.env.timestamp + 60
    nonce = b"\x03" * 32
    v, r, s = _auth(usd, key_account(77), payee.address, USD, 0, before, nonce)  # wrong key
    with boa.reverts("token: invalid signature"):
        usd.transferWithAuthorization(payer.address, payee.address, USD, 0, before, nonce, v, r, s)
    v, r, s = _auth(usd, payer, payee.address, USD, 0, before, nonce)
    with boa.reverts("token: invalid signature"):  # tampered amount
        usd.transferWithAuthorization(payer.address, payee.address, 2 * USD, 0, before, nonce,
                                      v, r, s)
    # a receive-typed signature is not a transfer-typed one
    v, r, s = _auth(usd, payer, payee.address, USD, 0, before, nonce, "ReceiveWithAuthorization")
    with boa.reverts("token: invalid signature"):
        usd.transferWithAuthorization(payer.address, payee.address, USD, 0, before, nonce, v, r, s)


def test_receive_with_authorization_only_payee(system):
    usd, payer, payee = system.usd, system.tenant, system.outsider
    before = boa.env.timestamp + 60
    nonce = b"\x04" * 32
    v, r, s = _auth(usd, payer, payee.address, USD, 0, before, nonce, "ReceiveWithAuthorization")
    with boa.env.prank(system.treasury), boa.reverts("token: caller must be the payee"):
        usd.receiveWithAuthorization(payer.address, payee.address, USD, 0, before, nonce, v, r, s)
    bal = usd.balanceOf(payee.address)
    with boa.env.prank(payee.address):
        usd.receiveWithAuthorization(payer.address, payee.address, USD, 0, before, nonce, v, r, s)
    assert usd.balanceOf(payee.address) == bal + USD
    with boa.env.prank(payee.address), boa.reverts("token: authorization used or canceled"):
        usd.receiveWithAuthorization(payer.address, payee.address, USD, 0, before, nonce, v, r, s)


def test_cancel_authorization(system):
    usd, payer, payee = system.usd, system.tenant, system.outsider
    before = boa.env.timestamp + 60
    nonce = b"\x05" * 32
    cancel = _typed(usd, "CancelAuthorization", CANCEL_TYPE,
                    {"authorizer": payer.address, "nonce": nonce})
    cv, cr, cs = _vrs(key_account(78), cancel)
    with boa.reverts("token: invalid signature"):
        usd.cancelAuthorization(payer.address, nonce, cv, cr, cs)
    cv, cr, cs = _vrs(payer, cancel)
    usd.cancelAuthorization(payer.address, nonce, cv, cr, cs)
    assert usd.authorizationState(payer.address, nonce)
    with boa.reverts("token: authorization used or canceled"):
        usd.cancelAuthorization(payer.address, nonce, cv, cr, cs)
    v, r, s = _auth(usd, payer, payee.address, USD, 0, before, nonce)
    with boa.reverts("token: authorization used or canceled"):
        usd.transferWithAuthorization(payer.address, payee.address, USD, 0, before, nonce, v, r, s)


def test_authorization_digest_is_standard(system):
    """The contract's domain is the one eth_account builds, so wallets sign the right thing."""
    usd, payer = system.usd, system.tenant
    nonce = b"\x06" * 32
    typed = _typed(usd, "TransferWithAuthorization", AUTH_FIELDS, {
        "from": payer.address, "to": payer.address, "value": 1, "validAfter": 0,
        "validBefore": 2**40, "nonce": nonce})
    sig = payer.sign_typed_data(full_message=typed)
    assert Account._recover_hash(typed_digest(typed), signature=sig.signature) == payer.address
