"""The bridge's owner on the two-chain devnet is each chain's Timelock (chain/bridge_deploy.py;
docs/bridge.md, "Owner powers"): the home bridge the home Timelock, the peer's bridge and the
TUSD and TSTK deployed there a Timelock on the peer with the same delay. The deployer, who
deployed and linked everything, can no longer change a limit, a route, the guardian, or mint
the peer's TUSD; it can only schedule such a change in the open and make it after the delay.
The guardian still pauses at once. A second peer reuses the home bridge without a second
hand-over; its home half of the route waits the delay like any owner action.

The adversary is whoever holds the deployer's key (a rogue operator, a thief): it tries each
owner function directly, an early execute, a schedule with a shorter delay than the minimum,
and a proposal from an account without the role. All are refused."""

from __future__ import annotations

import pytest
from tests.bridge.conftest import GUARDIAN, HOME, OWNER, PEER, SENDER, extra_anvil
from web3 import Web3

from tessera.chain.accounts import DEVNET_ACCOUNT_COUNT, devnet_account
from tessera.chain.bridge_deploy import BridgeParams, deploy_bridge, execute_route
from tessera.chain.client import Chain
from tessera.chain.compiler import BRIDGE_CONTRACT_NAMES
from tessera.chain.contract import ZERO_ADDRESS
from tessera.chain.devnet import FUND_PAYMENT
from tessera.chain.network import Network
from tessera.errors import TxRefused

THIRD = 31339
TWO_DAYS = 2 * 86_400
PEER_TOKENS = ("PaymentToken", "StakeToken")
NOT_OWNER = "not owner|caller is not the owner|access is denied"


def owner_of(chain: Chain, name: str) -> str:
    return chain.call(chain.contract(name).functions.owner())


def test_each_chains_timelock_owns_its_bridge(bridge):
    deployer = devnet_account(OWNER).address
    for cid in (HOME, PEER):
        chain = bridge.chain(cid)
        timelock = bridge.timelock(cid)
        assert timelock.address == bridge.net(cid).address("Timelock")
        assert timelock.min_delay() == TWO_DAYS          # the peer's: the home's delay
        for name in BRIDGE_CONTRACT_NAMES:
            assert owner_of(chain, name) == timelock.address, (cid, name)
        for role in ("PROPOSER_ROLE", "EXECUTOR_ROLE", "CANCELLER_ROLE"):
            role_id = chain.call(getattr(timelock.contract.functions, role)())
            assert chain.call(timelock.contract.functions.hasRole(role_id, deployer)), role
        admin = chain.call(timelock.contract.functions.DEFAULT_ADMIN_ROLE())
        assert not chain.call(timelock.contract.functions.hasRole(admin, deployer))
        guardian = devnet_account(GUARDIAN).address
        assert bridge.inbox(cid).guardian() == guardian == bridge.token_bridge(cid).guardian()
    peer = bridge.chain(PEER)
    peer_timelock = bridge.timelock(PEER).address
    for name in PEER_TOKENS:      # their mint role went with the ownership
        token = peer.contract(name)
        assert owner_of(peer, name) == peer_timelock
        assert peer.call(token.functions.is_minter(peer_timelock))
        assert not peer.call(token.functions.is_minter(deployer))
    # the devnet's peer TUSD was minted once, to fund its accounts, before the hand-over
    assert peer.call(peer.payment_token.functions.totalSupply()) == DEVNET_ACCOUNT_COUNT * FUND_PAYMENT
    assert bridge.tusd(PEER, devnet_account(SENDER).address) == FUND_PAYMENT
    # at home: the tokens the bridge mints are the Timelock's too, their bridges the only other
    # minters (so nobody mints home TUSD or TSTK that could be burned toward the peer's locks)
    home = bridge.chain(HOME)
    home_timelock = bridge.timelock(HOME).address
    for name, minter in (("PaymentToken", "TokenBridge"), ("StakeToken", "StakeBridge"),
                         ("Validators", None), ("ProviderRegistry", None)):
        assert owner_of(home, name) == home_timelock, name
        if minter:
            token = home.contract(name)
            assert home.call(token.functions.is_minter(home.network.address(minter)))
            assert not home.call(token.functions.is_minter(deployer))
    slasher = home.network.address("ForgerySlasher")
    validators = home.contract("Validators")
    assert home.call(validators.functions.is_slasher(slasher))
    assert home.call(validators.functions.withdraw_guard()) == slasher
    [guard_set] = validators.events.WithdrawGuardSet().get_logs(from_block=0)
    assert guard_set["args"]["guard"] == slasher


def test_the_deployer_is_refused_and_the_guardian_pauses_at_once(bridge):
    """The deployer's key tries every way to act as owner directly: widen a bucket, name itself
    guardian, drop the delay on large transfers, move a route's peer or inbox, take the
    ownership back, mint the peer's TUSD or make itself a minter. Then the guardian pulls the
    brake on both chains, each in one transaction, with nothing scheduled."""
    me = devnet_account(OWNER).address
    for cid in (HOME, PEER):
        chain = bridge.chain(cid, OWNER)
        peer_id = PEER if cid == HOME else HOME
        outbox, inbox, token_bridge = (chain.contract(n).functions for n in BRIDGE_CONTRACT_NAMES)
        attempts = [inbox.register_source(peer_id, me),
                    inbox.set_value_sender(peer_id, me, 10**30, 10**30, 10**30),
                    inbox.set_guardian(me),
                    inbox.set_delay(0), inbox.unpause(), inbox.set_mailbox(me),
                    inbox.transfer_ownership(me), outbox.set_inbox(peer_id, me),
                    outbox.transfer_ownership(me), token_bridge.set_peer(peer_id, me, 10**30),
                    token_bridge.set_guardian(me), token_bridge.unpause(),
                    token_bridge.transfer_ownership(me)]
        if cid == PEER:
            for name in PEER_TOKENS:
                token = chain.contract(name).functions
                attempts += [token.mint(me, 10**24), token.set_minter(me, True),
                             token.transfer_ownership(me)]
        for fn in attempts:   # refused as not the owner (snekmate: "caller is not the
            with pytest.raises(TxRefused, match=NOT_OWNER):   # owner"; a mint: not a minter)
                chain.send(fn)
    for cid in (HOME, PEER):
        before = bridge.chain(cid).block_number()
        bridge.inbox(cid, GUARDIAN).pause()
        bridge.token_bridge(cid, GUARDIAN).pause()
        assert bridge.inbox(cid).paused() and bridge.token_bridge(cid).paused()
        assert bridge.chain(cid).block_number() == before + 2     # two transactions, no wait


def test_a_scheduled_owner_action_waits_the_delay(bridge):
    """The guardian paused the peer's TokenBridge; only its Timelock unpauses it. The deployer's
    schedule is public (CallScheduled names the target); executing it early, scheduling a copy
    with a shorter delay, or proposing from an account without the role is refused; after the
    delay it runs. A later pause takes a new schedule (the next salt), not a replay."""
    bridge.token_bridge(PEER, GUARDIAN).pause()
    timelock = bridge.timelock(PEER)
    target = bridge.token_bridge(PEER).address
    step, ready_at, receipt = timelock.advance("TokenBridge", "unpause")
    assert step == "scheduled"
    (scheduled,) = timelock._events(receipt, "CallScheduled")
    assert scheduled["target"] == target and scheduled["delay"] == TWO_DAYS
    call = timelock.owner_call("TokenBridge", "unpause")
    with pytest.raises(TxRefused):
        timelock.execute(call)
    hurried = timelock.owner_call("TokenBridge", "unpause", salt=b"\x07" * 32)
    with pytest.raises(TxRefused, match="insufficient delay"):
        timelock.schedule(hurried, delay=0)
    with pytest.raises(TxRefused):
        bridge.timelock(PEER, GUARDIAN).schedule(hurried)        # not a proposer
    bridge.warp(PEER, ready_at - bridge.chain(PEER).block_timestamp() - 60)
    assert timelock.advance("TokenBridge", "unpause")[0] == "waiting"
    assert bridge.token_bridge(PEER).paused()
    bridge.warp(PEER, 60)
    assert timelock.advance("TokenBridge", "unpause")[0] == "executed"
    assert not bridge.token_bridge(PEER).paused()

    bridge.token_bridge(PEER, GUARDIAN).pause()
    assert timelock.advance("TokenBridge", "unpause")[0] == "scheduled"   # not done at once
    assert bridge.token_bridge(PEER).paused()


def test_a_second_peer_reuses_the_home_bridge_without_a_second_hand_over(bridge, tmp_path):
    """A third chain joins: its own bridge and tokens go to its own Timelock, the home bridge
    (already the home Timelock's) is not handed over again, and the home half of the new route
    is scheduled, so the home inbox accepts the third chain only after the delay."""
    deployer = devnet_account(OWNER)
    params = BridgeParams(guardian=devnet_account(GUARDIAN).address)
    home_timelock = bridge.timelock(HOME).address
    with extra_anvil(tmp_path, THIRD) as url:
        remote = Network(name="third", chain_id=THIRD, rpc_url=url, contracts={})
        network = deploy_bridge(bridge.network, remote, deployer, params, peer_name="third")
        third = network.peer(THIRD)
        assert [p.chain_id for p in network.peers] == [PEER, THIRD]
        home = bridge.chain(HOME)
        for name in BRIDGE_CONTRACT_NAMES:
            assert network.address(name) == bridge.network.address(name)
            assert owner_of(home, name) == home_timelock
        third_chain = Chain(third)
        third_timelock = third.address("Timelock")
        assert third_timelock != ZERO_ADDRESS
        for name in (*BRIDGE_CONTRACT_NAMES, *PEER_TOKENS):
            assert owner_of(third_chain, name) == third_timelock, name
        home_outbox = Web3.to_checksum_address(network.address("BridgeOutbox"))
        assert third_chain.call(third_chain.contract("BridgeInbox").functions.outbox_of(HOME)) \
            == home_outbox                                     # the third's half: linked at once
        assert bridge.inbox(HOME).outbox_of(THIRD) == ZERO_ADDRESS   # the home's: scheduled
        with pytest.raises(TxRefused):
            execute_route(Chain(network, deployer), THIRD, third.contracts, params)
        bridge.warp(HOME, TWO_DAYS)
        execute_route(Chain(network, deployer), THIRD, third.contracts, params)
        assert bridge.inbox(HOME).outbox_of(THIRD) == third.address("BridgeOutbox")
        assert bridge.token_bridge(HOME).peer(THIRD) == third.address("TokenBridge")


def test_bridge_unpause_from_the_command_line_goes_through_the_timelock(bridge):
    """`tessera bridge unpause` by the deployer: the first run schedules (the contract stays
    paused), a run before the delay only says how long, a run after it executes."""
    from typer.testing import CliRunner

    from tessera.cli import app

    bridge.inbox(HOME, GUARDIAN).pause()
    bridge.token_bridge(HOME, GUARDIAN).pause()

    def unpause() -> str:
        result = CliRunner().invoke(app, ["bridge", "unpause", "--chain", str(HOME), "--network",
                                          str(bridge.env.devnet.network_file), "--account",
                                          f"devnet:{OWNER}"])
        assert result.exit_code == 0, result.output
        return " ".join(result.stdout.split())

    assert unpause().count("scheduled through its Timelock") == 2
    assert unpause().count("waits its Timelock until") == 2
    assert bridge.inbox(HOME).paused() and bridge.token_bridge(HOME).paused()
    bridge.warp(HOME, TWO_DAYS)
    assert unpause().count("unpaused by its Timelock") == 2
    assert not bridge.inbox(HOME).paused() and not bridge.token_bridge(HOME).paused()
