"""The audit's home-token supply (`tessera audit` on a network with peer chains; docs/bridge.md,
"Conservation").

The bridge's conservation rule (audit_bridge.py) reads the token bridges' logs: TUSD locked on a
peer = what the home TokenBridge minted for it + in flight. That says nothing of the home token's
supply itself, which other minters (the devnet's deployer before the hand-over, the home
Timelock after its delay) can change. Here, for each mint-mode token bridge (TokenBridge over
TUSD, StakeBridge over TSTK) on the home chain, from the token's own `Transfer` logs from and to
the zero address and its `totalSupply` at the audited block (independent readings):

- the supply equals every mint less every burn in the token's logs (else the token's supply
  moved without a log: a problem);
- each bridge receipt (`TransferReceived`, `TransferBounced`) has its mint and each send
  (`TransferSent`) its burn: the same transaction, account and amount (a bridge event without
  its mint or burn is a problem: the bridge's books and the token disagree);
- the rest of the supply was minted at home outside the bridge: shown, not a problem (it has no
  lock behind it on any peer, and the mint side's `backing` keeps it from being burned toward
  one), as what was minted and what was burned outside the bridge, each on its own (a holder's
  own burn of bridged tokens must not hide an unbacked mint of the same amount: review 13).

`supply_of` is pure: the readings are taken by `read_supply`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from tessera.chain.client import Chain
from tessera.chain.contract import ZERO_ADDRESS
from tessera.chain.token_bridge import TokenBridge
from tessera.protocol.events import EventRecord, hex0x

TOTAL_SUPPLY = "0x18160ddd"   # ERC-20 totalSupply()
RECEIPTS = {"TransferReceived": "to", "TransferBounced": "to"}   # event -> who got the mint
SENDS = {"TransferSent": "sender"}                                  # event -> whose tokens burned


@dataclass
class Supply:
    """A home token's supply at the audited block, split by who minted it."""

    chain_id: int
    token: str                     # "TUSD" or "TSTK"
    bridge: str                    # the mint-mode bridge of that token
    supply: int                    # totalSupply() at the block
    minted: int                    # every Transfer from the zero address
    burned: int                    # every Transfer to the zero address
    bridged: int                   # net minted by the bridge (receipts - sends, by its logs)
    outside_bridge: int            # supply - bridged = outside_minted - outside_burned
    outside_minted: int = 0        # mints no bridge receipt accounts for (no lock behind them)
    outside_burned: int = 0        # burns no bridge send accounts for (a holder's own `burn`)
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return vars(self)


def _key(tx: str, who: str, amount: int) -> tuple[str, str, int]:
    return tx.lower(), who.lower(), int(amount)


def supply_of(chain_id: int, token: str, bridge: str, bridge_events: list[EventRecord],
              mints: list[EventRecord], burns: list[EventRecord], supply: int) -> Supply:
    """The supply check from the bridge's events, the token's mint and burn Transfer logs (args
    `sender`, `receiver`, `value`) and its totalSupply, all at one block."""
    minted = sum(int(m.args["value"]) for m in mints)
    burned = sum(int(b.args["value"]) for b in burns)
    out = Supply(chain_id, token, bridge, supply, minted, burned, 0, 0)
    if supply != minted - burned:
        out.problems.append(f"chain {chain_id}: {token}'s totalSupply is {supply} but its logs mint "
                            f"{minted} and burn {burned} ({minted - burned}): supply moved without "
                            "a log")
    mint_keys = Counter(_key(m.tx_hash, m.args["receiver"], m.args["value"]) for m in mints)
    burn_keys = Counter(_key(b.tx_hash, b.args["sender"], b.args["value"]) for b in burns)
    for e in bridge_events:
        if e.event in RECEIPTS:
            pool, who, sign, what = mint_keys, e.args[RECEIPTS[e.event]], 1, "mint"
        elif e.event in SENDS:
            pool, who, sign, what = burn_keys, e.args[SENDS[e.event]], -1, "burn"
        else:
            continue
        amount = int(e.args["amount"])
        key = _key(e.tx_hash, who, amount)
        if pool[key] <= 0:
            out.problems.append(f"chain {chain_id}: {bridge} {e.event} of {amount} for {who} (tx "
                                f"{e.tx_hash}) has no {token} {what} of that amount in its "
                                "transaction")
            continue
        pool[key] -= 1
        out.bridged += sign * amount
        if sign > 0:
            out.outside_minted -= amount
        else:
            out.outside_burned -= amount
    out.outside_minted += minted
    out.outside_burned += burned
    out.outside_bridge = supply - out.bridged
    return out


def read_supply(chain: Chain, kind: type[TokenBridge], block: int,
                bridge_events: list[EventRecord]) -> Supply | None:
    """The readings for `kind`'s token on `chain` (None unless that bridge mints there)."""
    if kind.NAME not in chain.network.contracts or kind.TOKEN.NAME not in chain.network.contracts:
        return None
    bridge = kind(chain)
    if not bridge.mint_mode():
        return None
    first = chain.network.deploy_block
    mints = [_record(e) for e in chain.events(kind.TOKEN.NAME, "Transfer", first, block,
                                              argument_filters={"sender": ZERO_ADDRESS})]
    burns = [_record(e) for e in chain.events(kind.TOKEN.NAME, "Transfer", first, block,
                                              argument_filters={"receiver": ZERO_ADDRESS})]
    token = bridge.token_wrapper.address
    raw = chain.rpc(lambda: chain.w3.eth.call({"to": token, "data": TOTAL_SUPPLY}, block),
                    what="totalSupply")
    mine = [e for e in bridge_events if e.contract == kind.NAME]
    return supply_of(chain.network.chain_id, kind.TOKEN.SYMBOL, kind.NAME, mine, mints, burns,
                     int.from_bytes(bytes(raw), "big"))


def _record(log) -> EventRecord:
    return EventRecord(block_number=log["blockNumber"], block_hash=hex0x(log["blockHash"]),
                       timestamp=0, tx_hash=hex0x(log["transactionHash"]),
                       log_index=log["logIndex"], contract="token", event="Transfer",
                       args=dict(log["args"]))
