"""Decoding event logs fast: what `web3._utils.events.get_event_data` gives, without its per-log
machinery.

web3's decoder re-derives the event's types and names from the ABI for every log, runs every value
through its generic normalizers and wraps the result in AttributeDicts; reading a million events
spent about three quarters of its time there (bench/indexer.py, profiled). `EventShape` derives the
types and names once per event; `decode_args` then decodes topics and data with eth_abi, and
checksums addresses through a cache (the same few thousand addresses come back on every block).
The arguments are the same values, names and order as `dict(get_event_data(CODEC, abi, log).args)`
(tests/chain/test_log_decode.py checks it for every event of every contract); an event with a
tuple (struct) argument, which no Tessera contract has, goes through web3's decoder unchanged.

`raw_log` turns a log as a JSON-RPC node sends it (hex strings) into the few fields Tessera's
readers use, as bytes and ints, so that `eth_getLogs` can skip web3's result formatters too.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from eth_abi import encoding
from eth_abi.codec import ABICodec
from eth_abi.decoding import StringDecoder
from eth_abi.grammar import BasicType, parse
from eth_abi.registry import BaseEquals
from eth_abi.registry import registry as _default_registry
from eth_utils import to_checksum_address
from web3._utils.events import get_event_abi_types_for_decoding, get_event_data


class _LenientString(StringDecoder):
    """On-chain strings are bytes anyone picks (a provider's GPU model, a validator's endpoint):
    bytes that are not UTF-8 read as \\xNN instead of stopping every reader of the chain."""

    @staticmethod
    def decoder_fn(data, handle_string_errors="strict"):
        return data.decode("utf-8", "backslashreplace")


_registry = _default_registry.copy()
_registry.unregister("string")
_registry.register(BaseEquals("string"), encoding.TextStringEncoder, _LenientString, label="string")
CODEC = ABICodec(_registry)

@lru_cache(maxsize=1 << 16)
def checksummed(address: str) -> str:
    return to_checksum_address(address)


def _normalizer(type_str: str):
    """A function that checksums every address inside a decoded value of `type_str`, or None
    where the type holds no address (most do not: the value is used as decoded)."""
    abi_type = parse(type_str)
    if not isinstance(abi_type, BasicType):
        raise ValueError(f"not a basic ABI type: {type_str}")
    if abi_type.base != "address":
        return None
    depth = len(abi_type.arrlist or ())

    def fix(value, depth=depth):
        if depth == 0:
            return checksummed(value)
        return tuple(fix(v, depth - 1) for v in value)

    return fix


class EventShape:
    """One event's ABI, split once into what decoding each of its logs needs."""

    __slots__ = ("abi", "name", "topic_names", "topic_types", "data_names", "data_types",
                 "topic_fix", "data_fix", "has_tuple")

    def __init__(self, abi: dict):
        self.abi = abi
        self.name = abi["name"]
        inputs = abi["inputs"]
        self.has_tuple = any(i["type"].startswith("tuple") for i in inputs)
        if self.has_tuple:
            return
        indexed = [i for i in inputs if i.get("indexed")]
        plain = [i for i in inputs if not i.get("indexed")]
        self.topic_names = [i["name"] for i in indexed]
        # web3's own rule: an indexed dynamic value (string, bytes, T[]...) is logged as its keccak
        self.topic_types = list(get_event_abi_types_for_decoding(indexed))
        self.data_names = [i["name"] for i in plain]
        self.data_types = [i["type"] for i in plain]
        self.topic_fix = [_normalizer(t) for t in self.topic_types]
        self.data_fix = [_normalizer(t) for t in self.data_types]

    def decode_args(self, topics: list, data: bytes) -> dict[str, Any]:
        """The event's arguments from a log's topics (topic0 first) and data: the values, names
        and order of web3's `get_event_data(...).args`."""
        if self.has_tuple:
            return dict(get_event_data(CODEC, self.abi, {
                "topics": topics, "data": data, "logIndex": 0, "transactionIndex": 0,
                "transactionHash": b"", "address": "", "blockHash": b"", "blockNumber": 0})["args"])
        if len(topics) - 1 != len(self.topic_types):
            raise ValueError(f"{self.name}: expected {len(self.topic_types)} indexed topics, "
                             f"got {len(topics) - 1}")
        args: dict[str, Any] = {}
        for name, type_str, fix, topic in zip(self.topic_names, self.topic_types, self.topic_fix,
                                              topics[1:], strict=True):
            value = CODEC.decode([type_str], bytes(topic))[0]
            args[name] = fix(value) if fix else value
        values = CODEC.decode(self.data_types, bytes(data)) if self.data_types else ()
        for name, fix, value in zip(self.data_names, self.data_fix, values, strict=True):
            args[name] = fix(value) if fix else value
        return args


def raw_log(log: dict) -> dict[str, Any]:
    """A JSON-RPC log (hex strings) as the fields Tessera's readers use: `address` (lowercase),
    `topics` and `data` as bytes, `blockNumber` and `logIndex` as ints, `transactionHash` and
    `blockHash` as bytes."""
    return {"address": log["address"].lower(),
            "topics": [bytes.fromhex(t[2:]) for t in log["topics"]],
            "data": bytes.fromhex(log["data"][2:]),
            "blockNumber": int(log["blockNumber"], 16), "logIndex": int(log["logIndex"], 16),
            "transactionHash": bytes.fromhex(log["transactionHash"][2:]),
            "blockHash": bytes.fromhex(log["blockHash"][2:])}
