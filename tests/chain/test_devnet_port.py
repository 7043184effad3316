"""A devnet whose port another process holds: refused with PortInUse, never connected to the
other process's chain. Two test workers start anvils at the same time, and a port that
free_port() found free may be taken before anvil binds it: the devnet must then fail cleanly
(the shared fixture picks another port) instead of deploying onto someone else's anvil."""

from __future__ import annotations

import pytest
from web3 import Web3

from tessera.chain.devnet import DEVNET_CHAIN_ID, Devnet
from tessera.errors import PortInUse


def test_a_taken_port_is_refused_and_the_other_chain_untouched(tmp_path, private_devnet):
    with private_devnet(tmp_path / "first") as (first, network):
        port = int(network.rpc_url.rsplit(":", 1)[1])
        w3 = Web3(Web3.HTTPProvider(network.rpc_url))
        first_block = w3.eth.block_number
        second = Devnet(tmp_path / "second")
        # the check before anvil starts
        with pytest.raises(PortInUse, match=f"port {port} is already in use"):
            second.up(port=port)
        # the race: anvil itself fails to bind; the first chain must not be taken for ours
        second.home.mkdir(parents=True, exist_ok=True)
        with pytest.raises(PortInUse, match=f"port {port} is already in use"):
            second._start_anvil(port, DEVNET_CHAIN_ID, None, "anvil.log", second.pid_file)
        blocks = w3.eth.block_number
        assert second.pid() is None
    assert blocks == first_block       # nothing was deployed onto the first chain
