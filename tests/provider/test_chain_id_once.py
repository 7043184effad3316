"""eth_chainId once per process, whatever the thread (chain/client.py): bench/results/scale.json
showed an idle provider beating to a validator asking it twice a minute. The cause was not the
beats but the validator's probes: the provider answers them in anyio worker threads, which
expire after 10 s idle, and web3's request cache (and so its validation middleware's
eth_chainId before every eth_call) is per thread. A counting proxy in front of anvil: calls
from fresh threads, and a signed transaction, ask it no more. Seconds."""

from __future__ import annotations

import threading

from tests.provider_http.rpc_counter import CountingProxy

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain
from tessera.chain.network import load_network
from tessera.chain.uptime import Uptime


def test_eth_chain_id_is_asked_once_whatever_the_thread(tmp_path, private_devnet):
    with private_devnet(tmp_path) as (devnet, network), \
            CountingProxy(network.rpc_url, websocket=False) as proxy:
        proxied = load_network(str(proxy.network_file(devnet.network_file, tmp_path / "p.json")))
        chain = Chain(proxied, devnet_account(4))
        assert chain.check_connected() == network.chain_id
        uptime = Uptime(chain)
        for _ in range(5):   # as a probe's handler runs: a new worker thread each time
            thread = threading.Thread(target=uptime.current_epoch)
            thread.start()
            thread.join()
        uptime.open_epoch()  # estimate, sign, send: the chain id is the network file's
        counts, _ = proxy.snapshot()
    assert counts["eth_call"] >= 5 and counts["eth_sendRawTransaction"] == 1
    assert counts["eth_chainId"] == 1, counts
