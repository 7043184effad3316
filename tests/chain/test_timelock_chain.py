"""deploy_all on a real anvil hands the ProviderRegistry, the Validators and the Market to the Timelock
after its own role grants: the deployer cannot grant a slasher directly any more, and a grant
scheduled through the Timelock wrapper is refused before the delay and executed after it, with
the CallScheduled / CallExecuted / SlasherSet events on chain (docs/contracts.md, "Owner
powers")."""

from __future__ import annotations

import pytest
from web3.logs import DISCARD

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain
from tessera.chain.devnet import DEPLOYER
from tessera.chain.timelock import Timelock
from tessera.errors import TxRefused


@pytest.fixture(scope="module")
def network(tmp_path_factory, private_devnet):
    with private_devnet(tmp_path_factory.mktemp("timelock")) as (_, network):
        yield network


def test_owner_actions_wait_for_the_timelock(network):
    chain = Chain(network, devnet_account(DEPLOYER))
    timelock = Timelock(chain)
    delay = timelock.min_delay()
    assert delay == 2 * 86_400
    for contract in (chain.registry, chain.validators, chain.market):
        assert chain.call(contract.functions.owner()) == timelock.address
    # the deploy-time grants were made before the hand-over
    for slasher in ("Uptime", "Market", "Verification", "HardwareReports"):
        assert chain.call(chain.registry.functions.is_slasher(network.address(slasher)))
    for slasher in ("Verification", "HardwareReports"):
        assert chain.call(chain.validators.functions.is_slasher(network.address(slasher)))

    grab = devnet_account(9).address
    with pytest.raises(TxRefused, match="caller is not the owner"):
        chain.send(chain.registry.functions.set_slasher(grab, True))
    call = timelock.owner_call("ProviderRegistry", "set_slasher", grab, True)
    receipt = timelock.schedule(call)
    (scheduled,) = timelock._events(receipt, "CallScheduled")
    assert (scheduled["target"], scheduled["delay"]) == (chain.registry.address, delay)
    assert timelock.ready_at(call) == chain.block_timestamp() + delay
    with pytest.raises(TxRefused):
        timelock.execute(call)
    assert not chain.call(chain.registry.functions.is_slasher(grab))
    chain.w3.provider.make_request("evm_increaseTime", [delay])
    chain.w3.provider.make_request("evm_mine", [])
    receipt = timelock.execute(call)
    assert timelock._events(receipt, "CallExecuted")
    set_logs = chain.registry.events.SlasherSet().process_receipt(receipt, errors=DISCARD)
    assert [dict(e["args"]) for e in set_logs] == [{"slasher": grab, "enabled": True}]
    assert chain.call(chain.registry.functions.is_slasher(grab))


def test_fee_change_waits_for_the_timelock(network):
    """The Market's fee (which applies to leases created after it) changes only through the
    Timelock, so providers see a new fee coming `delay` seconds before their bids can get it."""
    chain = Chain(network, devnet_account(DEPLOYER))
    timelock = Timelock(chain)
    with pytest.raises(TxRefused, match="caller is not the owner"):
        chain.send(chain.market.functions.set_fee_bps(1_000))
    call = timelock.owner_call("Market", "set_fee_bps", 1_000)
    timelock.schedule(call)
    with pytest.raises(TxRefused):
        timelock.execute(call)
    chain.w3.provider.make_request("evm_increaseTime", [timelock.min_delay()])
    chain.w3.provider.make_request("evm_mine", [])
    timelock.execute(call)
    assert chain.call(chain.market.functions.fee_bps()) == 1_000


def test_stake_can_only_be_minted_through_the_timelock(network):
    """With stake-weighted quorums, whoever mints stake can outvote every challenge and slash
    anyone: the supply is minted once at deploy, and the mint role moves to the Timelock."""
    chain = Chain(network, devnet_account(DEPLOYER))
    timelock = Timelock(chain)
    stake = chain.stake_token
    assert chain.call(stake.functions.owner()) == timelock.address
    assert chain.call(stake.functions.is_minter(timelock.address))
    assert not chain.call(stake.functions.is_minter(chain.address))
    with pytest.raises(TxRefused, match="access is denied"):
        chain.send(stake.functions.mint(chain.address, 1))
    call = timelock.owner_call("StakeToken", "mint", chain.address, 1)
    timelock.schedule(call)
    chain.w3.provider.make_request("evm_increaseTime", [timelock.min_delay()])
    chain.w3.provider.make_request("evm_mine", [])
    before = chain.call(stake.functions.totalSupply())
    timelock.execute(call)
    assert chain.call(stake.functions.totalSupply()) == before + 1
