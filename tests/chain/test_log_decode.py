"""chain/log_decode.py decodes every event of every Tessera contract to what web3's own decoder
(`get_event_data`, which the readers used before) gives: same names, values, types and order,
over random arguments of every type the events use, including strings that are not UTF-8."""

from __future__ import annotations

import random

import pytest
from eth_abi import encode
from eth_utils import event_abi_to_log_topic, keccak, to_checksum_address
from hypothesis import given, settings
from hypothesis import strategies as st
from web3._utils.events import get_event_data

from tessera.chain.compiler import (
    BRIDGE_CONTRACT_NAMES,
    CONTRACT_NAMES,
    OPTIONAL_CONTRACT_NAMES,
    compile_contract,
)
from tessera.chain.log_decode import CODEC, EventShape, raw_log
from tessera.protocol.events import json_safe


def _events() -> list[tuple[str, dict]]:
    out = []
    for name in (*CONTRACT_NAMES, *BRIDGE_CONTRACT_NAMES, *OPTIONAL_CONTRACT_NAMES):
        for abi in compile_contract(name).abi:
            if abi.get("type") == "event":
                out.append((f"{name}.{abi['name']}", abi))
    return out


EVENTS = _events()


def _value(type_str: str, rng: random.Random):
    if type_str.endswith("[]"):
        return [_value(type_str[:-2], rng) for _ in range(rng.randint(0, 4))]
    if type_str == "address":
        return to_checksum_address(rng.randbytes(20))
    if type_str == "bool":
        return rng.random() < 0.5
    if type_str.startswith("uint"):
        return rng.randrange(2 ** int(type_str[4:] or 256))
    if type_str == "bytes":
        return rng.randbytes(rng.randint(0, 70))
    if type_str.startswith("bytes"):
        return rng.randbytes(int(type_str[5:]))
    if type_str == "string":          # sometimes bytes that are not UTF-8 (a junk GPU model)
        return rng.choice(["", "H100", "ü-80GB", "x" * 40]) if rng.random() < 0.7 else rng.randbytes(9)
    raise AssertionError(f"no generator for {type_str}: add one")


def _log(abi: dict, rng: random.Random) -> dict:
    """A log of `abi` with random arguments, as web3's formatted `eth_getLogs` gives it."""
    topics, data_types, data_values = [event_abi_to_log_topic(abi)], [], []
    for arg in abi["inputs"]:
        value = _value(arg["type"], rng)
        as_type = "bytes" if arg["type"] == "string" and isinstance(value, bytes) else arg["type"]
        if arg["indexed"]:
            dynamic = arg["type"] in ("string", "bytes") or arg["type"].endswith("[]")
            topics.append(keccak(encode([as_type], [value])) if dynamic else encode([as_type], [value]))
        else:
            data_types.append(as_type)
            data_values.append(value)
    return {"topics": topics, "data": encode(data_types, data_values), "logIndex": 3,
            "transactionIndex": 0, "transactionHash": b"\x01" * 32, "blockHash": b"\x02" * 32,
            "blockNumber": 7, "address": "0x" + "ab" * 20}


def test_every_event_of_every_contract_is_covered():
    types = {arg["type"] for _, abi in EVENTS for arg in abi["inputs"]}
    assert len(EVENTS) > 50 and {"address", "address[]", "string", "bytes", "uint256[]"} <= types


@pytest.mark.parametrize("name,abi", EVENTS, ids=[n for n, _ in EVENTS])
def test_same_arguments_as_web3(name, abi):
    shape = EventShape(abi)
    for seed in range(12):
        log = _log(abi, random.Random(f"{name}-{seed}"))
        theirs = dict(get_event_data(CODEC, abi, log)["args"])
        ours = shape.decode_args(log["topics"], log["data"])
        assert list(ours) == list(theirs)
        assert json_safe(ours) == json_safe(theirs)
        assert [type(v) for v in ours.values()] == [
            tuple if isinstance(v, list | tuple) else type(v) for v in theirs.values()]


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(EVENTS), st.integers(0, 2**32))
def test_same_arguments_as_web3_property(event, seed):
    _, abi = event
    log = _log(abi, random.Random(seed))
    theirs = dict(get_event_data(CODEC, abi, log)["args"])
    assert json_safe(EventShape(abi).decode_args(log["topics"], log["data"])) == json_safe(theirs)


def test_a_log_with_the_wrong_number_of_topics_is_refused_by_name():
    name, abi = next((n, a) for n, a in EVENTS if any(i["indexed"] for i in a["inputs"]))
    log = _log(abi, random.Random(1))
    with pytest.raises(ValueError, match=abi["name"] + ".*indexed topics"):
        EventShape(abi).decode_args(log["topics"][:-1], log["data"])


def test_raw_log_reads_a_nodes_hex_fields():
    raw = {"address": "0xABab" + "00" * 18, "topics": ["0x" + "11" * 32], "data": "0x0102",
           "blockNumber": "0x1f", "logIndex": "0x0", "transactionHash": "0x" + "22" * 32,
           "blockHash": "0x" + "33" * 32, "removed": False}
    assert raw_log(raw) == {"address": "0xabab" + "00" * 18, "topics": [b"\x11" * 32],
                            "data": b"\x01\x02", "blockNumber": 31, "logIndex": 0,
                            "transactionHash": b"\x22" * 32, "blockHash": b"\x33" * 32}
