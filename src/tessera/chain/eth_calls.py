"""Reads at one block, many at a time: `eth_call`s sent in JSON-RPC batches, each answer read as
an integer (an audit's independent readings of what the logs add up to: balances, a contract's
own figures). `balance_of_call` is the ERC-20 `balanceOf` call, the one most of them make."""

from __future__ import annotations

from tessera.chain.client import Chain

BALANCE_OF = "0x70a08231"   # the selector of ERC-20 balanceOf(address)
CALLS_PER_BATCH = 200


def balance_of_call(token: str, holder: str) -> dict:
    """The `eth_call` of `token.balanceOf(holder)`."""
    return {"to": token, "data": BALANCE_OF + holder.lower().removeprefix("0x").rjust(64, "0")}


def calls_at(chain: Chain, calls: list[dict], block: int, what: str = "eth_call") -> list[int]:
    """Each call's answer at `block` as an unsigned integer, in order, CALLS_PER_BATCH to a
    JSON-RPC batch."""
    out: list[int] = []
    for i in range(0, len(calls), CALLS_PER_BATCH):
        part = calls[i:i + CALLS_PER_BATCH]

        def fetch(part=part):
            if len(part) == 1:   # no batch for one (as EventReader.blocks does)
                return [chain.w3.eth.call(part[0], block)]
            with chain.w3.batch_requests() as batch:
                for tx in part:
                    batch.add(chain.w3.eth.call(tx, block))
                return batch.execute()

        out += [int.from_bytes(bytes(raw), "big") for raw in chain.rpc(fetch, what=what)]
    return out
