"""The committee follows the home Validators' stake (validator/bridge_rotation.py), on two real
anvil nodes: the attesters sign each inbox's hand-over when the stake-weighted choice differs
from its committee (a member leaving or joining, a weight moved by 10 %), the relayer carries a
quorum's signatures to `rotate`, and a validator that unbonded, once rotated out, withdraws (the
withdraw guard). A paused inbox is left as it is; junk queries get 4xx."""

from __future__ import annotations

import httpx
from tests.bridge.conftest import GUARDIAN, HOME, PEER, SENDER, TUSD

from tessera.chain.accounts import devnet_account
from tessera.chain.devnet import BRIDGE_VALIDATORS
from tessera.chain.tokens import StakeToken
from tessera.chain.validators import Validators

TSTK = 10**18
LEAVER = BRIDGE_VALIDATORS[2]


def committees(bridge) -> dict[int, tuple[int, dict[str, int]]]:
    return {cid: (bridge.inbox(cid).epoch(), bridge.inbox(cid).weights()) for cid in (HOME, PEER)}


def rotate_round(bridge, relayer) -> None:
    """The attesters' poll (their rotation duty), then the relayer's (it carries the quorum)."""
    bridge.attest()
    relayer.poll_once()


def test_an_unbonding_validator_is_rotated_out_then_withdraws(bridge):
    relayer = bridge.relayer()
    before = committees(bridge)
    leaver = devnet_account(LEAVER).address
    assert all(leaver in weights for _, weights in before.values())
    message_id = bridge.send(PEER, SENDER, 2 * TUSD)   # in flight across the rotation
    home = bridge.chain(HOME, LEAVER)
    validators = Validators(home)
    stake = validators.stake_of(leaver)
    validators.request_unbond(stake)

    rotate_round(bridge, relayer)
    after = committees(bridge)
    stayers = {devnet_account(i).address: Validators(home).stake_of(devnet_account(i).address)
               for i in BRIDGE_VALIDATORS if i != LEAVER}
    for cid in (HOME, PEER):
        assert after[cid] == (before[cid][0] + 1, stayers), cid
    # the transfer signed for the old epoch is signed again and delivered
    bridge.settle(relayer)
    assert bridge.inbox(HOME).delivered(message_id)
    bridge.warp(HOME, home.call(home.contract("Validators").functions.unbonding_period()) + 1)
    balance = StakeToken(home).balance_of(leaver)
    validators.withdraw_unbonded()                     # no longer a member: the guard agrees
    assert StakeToken(home).balance_of(leaver) == balance + stake
    rotate_round(bridge, relayer)
    assert committees(bridge) == after                 # nothing more is due


def test_a_small_weight_change_waits_a_large_one_rotates(bridge):
    relayer = bridge.relayer()
    before = committees(bridge)
    member = devnet_account(BRIDGE_VALIDATORS[0])
    validators = Validators(bridge.chain(HOME, BRIDGE_VALIDATORS[0]))
    validators.add_stake(5 * TSTK)                     # 5 % of 100 TSTK: not worth 0.3 M gas
    rotate_round(bridge, relayer)
    assert committees(bridge) == before
    validators.add_stake(10 * TSTK)                    # 15 % now
    rotate_round(bridge, relayer)
    after = committees(bridge)
    for cid in (HOME, PEER):
        epoch, weights = after[cid]
        assert epoch == before[cid][0] + 1 and weights[member.address] == 115 * TSTK


def test_a_paused_inbox_is_not_rotated_and_junk_gets_4xx(bridge):
    relayer = bridge.relayer()
    before = committees(bridge)
    bridge.inbox(HOME, GUARDIAN).pause()
    home = bridge.chain(HOME, LEAVER)
    Validators(home).request_unbond(Validators(home).stake_of(home.address))
    rotate_round(bridge, relayer)
    after = committees(bridge)
    assert after[HOME] == before[HOME]                 # held: its reports need the members
    assert after[PEER][0] == before[PEER][0] + 1       # the peer's inbox follows the stake
    url = bridge.env.urls[BRIDGE_VALIDATORS[0]]
    for params, status in (({"chain": HOME}, 404), ({"chain": 999}, 404),
                           ({"chain": "x"}, 422), ({}, 422), ({"chain": -1}, 422)):
        assert httpx.get(f"{url}/bridge/rotations", params=params).status_code == status, params
