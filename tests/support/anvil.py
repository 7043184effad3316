"""Raw anvil RPC for tests that drive the chain themselves (mining, snapshots, reverts)."""

from __future__ import annotations

from tessera.chain.client import Chain


def rpc(chain: Chain, method: str, *params):
    """The result of one raw JSON-RPC call (anvil's evm_* and anvil_* methods)."""
    answer = chain.w3.provider.make_request(method, list(params))
    assert "error" not in answer, answer
    return answer["result"]


def mine(chain: Chain, blocks: int) -> int:
    """Mine `blocks` empty blocks; the head's number after them."""
    for _ in range(blocks):
        rpc(chain, "evm_mine")
    return chain.block_number()
