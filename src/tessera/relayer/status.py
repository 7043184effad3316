"""`tessera bridge status`: every route's messages (sent, attested, delivered, queued,
cancelled, waiting) and, on its destination inbox, the bucket of each value sender of its source
(the source's TokenBridge and StakeBridge), read from the chains and the committee's validator
endpoints; nothing here needs an account."""

from __future__ import annotations

import io

from tessera.chain.bridge_inbox import BridgeInbox
from tessera.chain.bridge_outbox import BridgeOutbox
from tessera.chain.client import Chain
from tessera.chain.network import Network
from tessera.chain.token_bridge import TokenBridge
from tessera.chain.validators import Validators
from tessera.errors import BridgeError
from tessera.logs import EventLog
from tessera.relayer.relay import Collector

# The source side's contracts (network file names) whose messages carry value, each limited by
# its own bucket in the destination's inbox; route["bucket"] is the first one's.
VALUE_SENDERS = ("TokenBridge", "StakeBridge")


def bridge_status(network: Network, timeout: float = 2.0) -> dict:
    """{"chains": [...paused flags...], "routes": [...counts and buckets...]} (amounts in base
    units of each sender's token: "value_sent" and "bucket" are TokenBridge's, in TUSD). A
    route's "buckets" maps each value sender of VALUE_SENDERS that its source names to its
    bucket and "value_sent_by" to what it sent; "bucket" is TokenBridge's."""
    if not network.peers:
        raise BridgeError(f"network {network.name!r} names no peer chain: it has no bridge")
    chains = {n.chain_id: Chain(n) for n in network.chains()}
    for chain in chains.values():
        chain.check_connected()
    outboxes = {cid: BridgeOutbox(c) for cid, c in chains.items()}
    inboxes = {cid: BridgeInbox(c) for cid, c in chains.items()}
    collector = Collector(inboxes, Validators(chains[network.chain_id]),
                          EventLog("bridge-status", stream=io.StringIO()), timeout)
    doc: dict = {"chains": [], "routes": []}
    for cid, chain in chains.items():
        inbox = inboxes[cid]
        doc["chains"].append({"chain_id": cid, "name": chain.network.name,
                              "block": chain.block_number(), "epoch": inbox.epoch(),
                              "inbox_paused": inbox.paused(),
                              "token_bridge_paused": TokenBridge(chain).paused(),
                              "sent": outboxes[cid].count()})
    try:
        for src, dst in ((s, d) for s in chains for d in chains if s != d):
            if inboxes[dst].outbox_of(src) != outboxes[src].address:
                continue   # no route between two peers: each talks to the home chain only
            doc["routes"].append(_route(src, dst, outboxes[src], inboxes[dst], collector))
    finally:
        collector.close()
    return doc


def _route(src: int, dst: int, outbox: BridgeOutbox, inbox: BridgeInbox,
           collector: Collector) -> dict:
    counts = dict.fromkeys(("sent", "attested", "delivered", "queued", "cancelled", "waiting"), 0)
    source = outbox.chain.network.contracts
    senders = {source[n].lower(): n for n in VALUE_SENDERS if n in source}
    value = dict.fromkeys(senders.values(), 0)
    for sent in outbox.messages(outbox.chain.network.deploy_block, "latest", destination_chain=dst):
        m = sent.message
        counts["sent"] += 1
        if m.sender.lower() in senders:
            value[senders[m.sender.lower()]] += m.amount
        if inbox.delivered(m.id):
            counts["attested"] += 1
            if inbox.cancelled(m.id):
                counts["cancelled"] += 1
            elif inbox.pending(m.id):
                counts["queued"] += 1
            else:
                counts["delivered"] += 1
        else:
            counts["waiting"] += 1
            if collector.collect(m) is not None:
                counts["attested"] += 1
    buckets = {name: _bucket(inbox, src, source[name]) for name in VALUE_SENDERS if name in source}
    return {"source_chain": src, "destination_chain": dst, **counts,
            "value_sent": value[VALUE_SENDERS[0]], "value_sent_by": value,
            "bucket": buckets[VALUE_SENDERS[0]], "buckets": buckets}


def _bucket(inbox: BridgeInbox, src: int, sender: str) -> dict:
    """`sender`'s (on chain `src`) bucket in `inbox`."""
    bucket = inbox.bucket(src, sender)
    return {"sender": sender, "capacity": bucket.capacity, "refill_per_s": bucket.refill_per_s,
            "available": inbox.available(src, sender),
            "large_threshold": inbox.large_threshold(src, sender)}
