"""Every event of every deployed Tessera contract over a block range, as plain JSON-safe records.

CONTRACTS is every contract `deploy_all` deploys (the compiler's CONTRACT_NAMES). Of the two
tokens, the transfers and approvals that involve a Tessera contract (as sender, receiver, owner
or spender) are read, so what each contract holds is recomputable from logs alone, and every
other token event (ownership, minter role, EIP-3009 authorizations); transfers between other
holders are not: with a real stablecoin as the payment token they would be most of the chain,
and anyone could flood the index with zero-value transfers. The one exception is an agent's
x402 "exact" payment (EIP-3009, protocol/agent_payments.py): for every PaymentToken
`AuthorizationUsed` in a chunk, the PaymentToken transfers *from that authorizer* in the same
transaction are read too (one more `eth_getLogs` per chunk that holds authorizations, filtered
by the authorizers as the sender topic, kept only where transaction and sender match).

A reader may also take single events of another contract that name some of its own contracts in
an indexed address (`also`): the bridge's index reads the Market's `Refunded` events paid to
BridgeOrders and the TUSD transfers in and out of it without reading the whole Market or token
(one more `eth_getLogs` per such argument).

One `eth_getLogs` per chunk for all of them (filtered by address), decoded by topic0 with the
compiled ABIs (chain/log_decode.py: web3's values, without its per-log overhead), plus one
JSON-RPC batch of `eth_getBlockByNumber` for the timestamps. Only standard JSON-RPC is used, so
this runs against any EVM node.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from eth_utils import event_abi_to_log_topic
from web3 import Web3
from web3.exceptions import Web3RPCError

from tessera.chain.client import Chain
from tessera.chain.compiler import CONTRACT_NAMES
from tessera.chain.log_decode import EventShape, raw_log
from tessera.errors import ReorgDuringFetch
from tessera.protocol.events import EventRecord, hex0x, json_safe

CONTRACTS = CONTRACT_NAMES
BLOCK_BATCH = 200  # blocks per JSON-RPC batch when fetching timestamps


# How nodes say a log query asks too much (geth, erigon, Alchemy, Infura, QuickNode, Ankr...).
_RANGE_REFUSALS = ("range", "more than", "too many", "limit exceeded", "response size",
                   "too large", "exceed")


TOKEN_CONTRACTS = ("PaymentToken", "StakeToken")
HOLDER_EVENTS = ("Transfer", "Approval")   # token events read only when a Tessera contract is a party
AUTHORIZERS_PER_QUERY = 50                 # sender topics per eth_getLogs of EIP-3009 transfers


def _range_refused(exc: Exception) -> bool:
    return any(word in str(exc).lower() for word in _RANGE_REFUSALS)


class EventReader:
    """Reads and decodes Tessera's events from one chain."""

    def __init__(self, chain: Chain, chunk: int = 5_000, contracts: tuple[str, ...] = CONTRACTS,
                 also: tuple[tuple[str, str, tuple[str, ...]], ...] = ()):
        """`contracts`: the ones to read (default every deployed one; a reader that needs a few,
        such as the tenant's bid scores, reads only those and skips the tokens' transfers).
        `also`: (contract, event, names) of other contracts, read only where one of `names` (of
        `contracts`) is in an indexed address argument of the event."""
        self.chain = chain
        self.w3 = chain.w3
        self.chunk = chunk
        self.addresses: dict[str, str] = {}
        self.by_topic: dict[tuple[str, bytes], tuple[str, EventShape]] = {}
        self.topics: dict[tuple[str, str], bytes] = {}     # (contract, event) -> topic0
        for name in contracts:
            contract = chain.contract(name)
            address = Web3.to_checksum_address(contract.address)
            self.addresses[address.lower()] = name
            for abi in contract.abi:
                if abi.get("type") == "event":
                    topic = event_abi_to_log_topic(abi)
                    self.topics[(name, abi["name"])] = topic
                    self.by_topic[(address.lower(), topic)] = (name, EventShape(abi))
        self._also: list[dict] = []
        for name, event, parties in also:
            self._also += self._naming(name, event, parties)

    def _naming(self, name: str, event: str, parties: tuple[str, ...]) -> list[dict]:
        """The queries for `event` of contract `name` where one of the reader's contracts named
        `parties` is in an indexed address argument (one query per such argument: topics AND
        across positions)."""
        contract = self.chain.contract(name)
        abi = next((a for a in contract.abi if a.get("type") == "event" and a["name"] == event), None)
        if abi is None:
            raise ValueError(f"{name} has no event {event}")
        address = Web3.to_checksum_address(contract.address)
        topic = event_abi_to_log_topic(abi)
        self.topics[(name, event)] = topic
        self.by_topic[(address.lower(), topic)] = (name, EventShape(abi))
        wanted = ["0x" + a.removeprefix("0x").rjust(64, "0") for a, who in self.addresses.items()
                  if who in parties]
        if len(wanted) != len(parties):
            raise ValueError(f"{name}.{event}: the reader does not read {', '.join(parties)}")
        indexed = [i for i in abi["inputs"] if i.get("indexed")]
        return [{"address": address, "topics": ["0x" + topic.hex()] + [None] * position + [wanted]}
                for position, arg in enumerate(indexed) if arg["type"] == "address"]

    def head(self) -> int:
        return self.chain.block_number()

    def blocks(self, numbers: Iterable[int]) -> dict[int, tuple[str, int]]:
        """{number: (hash, timestamp)} for the given blocks, in JSON-RPC batches; missing ones absent."""
        numbers = sorted(set(numbers))
        found: dict[int, tuple[str, int]] = {}
        for i in range(0, len(numbers), BLOCK_BATCH):
            part = numbers[i:i + BLOCK_BATCH]

            def fetch(part=part):
                if len(part) == 1:
                    return [self.w3.eth.get_block(part[0])]
                with self.w3.batch_requests() as batch:
                    for n in part:
                        batch.add(self.w3.eth.get_block(n))
                    return batch.execute()

            try:
                results = self.chain.rpc(fetch, what="get blocks")
            except Exception as exc:  # a block past the head: fetch one by one
                if "not found" not in str(exc).lower() and "BlockNotFound" not in type(exc).__name__:
                    raise
                results = []
                for n in part:
                    try:
                        results.append(self.w3.eth.get_block(n))
                    except Exception:
                        results.append(None)
            for n, block in zip(part, results, strict=True):
                if block:
                    found[n] = (hex0x(block["hash"]), int(block["timestamp"]))
        return found

    def block(self, number: int) -> tuple[str, int] | None:
        return self.blocks([number]).get(number)

    def _queries(self) -> list[dict]:
        """The `eth_getLogs` filters (without the block range) that together give every log the
        reader wants: all events of the non-token contracts; the tokens' own events except
        transfers and approvals; and transfers/approvals with a Tessera contract in the first
        or the second indexed address (topics are ANDed across positions, so two filters)."""
        tokens = [a for a, name in self.addresses.items() if name in TOKEN_CONTRACTS]
        others = [a for a in self.addresses if a not in tokens]
        queries = [{"address": [Web3.to_checksum_address(a) for a in others]}] if others else []
        if tokens:
            token_addresses = [Web3.to_checksum_address(a) for a in tokens]
            holder, own = set(), set()
            for (address, topic), (_, event) in self.by_topic.items():
                if address in tokens:
                    (holder if event.name in HOLDER_EVENTS else own).add("0x" + topic.hex())
            parties = ["0x" + a.removeprefix("0x").rjust(64, "0") for a in self.addresses]
            queries.append({"address": token_addresses, "topics": [sorted(own)]})
            queries.append({"address": token_addresses, "topics": [sorted(holder), parties]})
            queries.append({"address": token_addresses, "topics": [sorted(holder), None, parties]})
        return queries + self._also

    def logs(self, from_block: int, to_block: int) -> list:
        """Every log the reader wants in [from_block, to_block] (see `_queries`), in chain order,
        `self.chunk` blocks per `eth_getLogs`. Public RPCs cap a query's block range or result
        count; when the node says so, the window halves (and stays smaller for later calls)
        down to one block."""
        queries = self._queries()
        found: dict[tuple[bytes, int], Any] = {}
        start = from_block
        while start <= to_block:
            stop = min(start + self.chunk - 1, to_block)
            chunk: dict[tuple[bytes, int], Any] = {}
            try:
                for query in queries:
                    for log in self._get_logs(query, start, stop):
                        chunk[(bytes(log["transactionHash"]), int(log["logIndex"]))] = log
                for log in self._authorized_transfers(list(chunk.values()), start, stop):
                    chunk[(bytes(log["transactionHash"]), int(log["logIndex"]))] = log
            except Web3RPCError as exc:
                if stop == start or not _range_refused(exc):
                    raise
                self.chunk = max(1, (stop - start + 1) // 2)
                continue
            found.update(chunk)
            start = stop + 1
        return sorted(found.values(), key=lambda log: (int(log["blockNumber"]), int(log["logIndex"])))

    def _get_logs(self, query: dict, start: int, stop: int) -> list[dict]:
        """One `eth_getLogs`, its logs as `log_decode.raw_log`s. Straight to the provider: web3's
        middlewares (AttributeDicts) and result formatters cost a fifth of reading a long
        history, and none of them changes a log query; an error is raised as web3 raises it."""
        params = {**query, "fromBlock": hex(start), "toBlock": hex(stop)}
        manager = self.w3.manager
        found = self.chain.rpc(lambda: manager.formatted_response(
            manager.provider.make_request("eth_getLogs", [params]), [params]), what="get logs")
        return [raw_log(log) for log in found]

    def _authorized_transfers(self, logs: list, start: int, stop: int) -> list:
        """The PaymentToken transfers that EIP-3009 authorizations in `logs` made: for each
        `AuthorizationUsed(authorizer, nonce)`, the transfers from `authorizer` in the same
        transaction (protocol/agent_payments.py pairs them). Transfers that involve a Tessera
        contract are in `logs` already; the others are fetched here, by sender topic."""
        auth_topic = self.topics.get(("PaymentToken", "AuthorizationUsed"))
        transfer_topic = self.topics.get(("PaymentToken", "Transfer"))
        if auth_topic is None or transfer_topic is None:
            return []
        token = next(a for a, name in self.addresses.items() if name == "PaymentToken")
        wanted: set[tuple[bytes, bytes]] = set()        # (tx hash, authorizer topic)
        for log in logs:
            topics = log["topics"]
            if log["address"].lower() == token and topics and bytes(topics[0]) == auth_topic:
                wanted.add((bytes(log["transactionHash"]), bytes(topics[1])))
        authorizers = sorted({who for _, who in wanted})
        out = []
        for i in range(0, len(authorizers), AUTHORIZERS_PER_QUERY):
            part = ["0x" + who.hex() for who in authorizers[i:i + AUTHORIZERS_PER_QUERY]]
            query = {"address": Web3.to_checksum_address(token),
                     "topics": ["0x" + transfer_topic.hex(), part]}
            out += [log for log in self._get_logs(query, start, stop)
                    if (bytes(log["transactionHash"]), bytes(log["topics"][1])) in wanted]
        return out

    def decode(self, log, blocks: dict[int, tuple[str, int]]) -> EventRecord | None:
        topics = log["topics"]
        if not topics:
            return None
        key = (log["address"].lower(), bytes(topics[0]))
        if key not in self.by_topic:
            return None
        contract, event = self.by_topic[key]
        args = event.decode_args(topics, log["data"])
        number = int(log["blockNumber"])
        block_hash, timestamp = blocks[number]
        if block_hash != hex0x(log["blockHash"]):
            raise ReorgDuringFetch(f"block {number} changed while reading its logs")
        return EventRecord(
            block_number=number, block_hash=block_hash, timestamp=timestamp,
            tx_hash=hex0x(log["transactionHash"]), log_index=int(log["logIndex"]),
            contract=contract, event=event.name, args=json_safe(args))

    def events(self, from_block: int, to_block: int) -> list[EventRecord]:
        """All events of the reader's contracts in [from_block, to_block], in chain order."""
        if to_block < from_block:
            return []
        logs = self.logs(from_block, to_block)
        blocks = self.blocks(int(log["blockNumber"]) for log in logs)
        records = [r for r in (self.decode(log, blocks) for log in logs) if r is not None]
        records.sort(key=lambda r: r.order)
        return records


def read_events(chain: Chain, from_block: int, to_block: int) -> list[EventRecord]:
    return EventReader(chain).events(from_block, to_block)
