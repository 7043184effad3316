"""The demo's cross-chain act (`tessera demo --chains 2`): the bidding providers' stake and the
tenant's TUSD are on the second chain. Each provider locks its stake there (StakeBridge) and
registers at home with what is minted for it; the tenant's order is funded from the peer chain in
one message (`Tenant.pay_from`: `TokenBridge.send_call` to BridgeOrders, whose delivery opens the
order at home), it rents there exactly as the one-chain demo does (demo.py calls the same
run_rental), and the relayer sends the order's refunds back to the peer chain
(`BridgeOrders.send_back`), with no transaction of the tenant's.

Real parts: the two-chain devnet (two anvil nodes; `Devnet.up(chains=2)` deploys the bridge and
registers devnet accounts 7, 8, 9 as validators, the bridge's genesis committee); those three
validators run from the start as `tessera validator run` processes (demo_cheater's
start_validators, the config the verification act uses), attesting each bridge message as part
of their duties; one `tessera bridge relay` process collects their signatures and delivers.
The demo itself sends and delivers nothing: the tenant's client, the validators and the relayer
do.

Accounting (docs/bridge.md, "Conservation"): at every step, the TUSD that TokenBridge holds on
the peer chain equals what TokenBridge minted on the home chain and has not burned, plus what is
in flight either way. A check is read again until neither chain made a block while it was read
(every delivery makes one), so that no delivery lands between its reads.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from eth_account.signers.local import LocalAccount
from rich.console import Console
from rich.table import Table

from tessera.chain.accounts import devnet_account
from tessera.chain.bridge_inbox import BridgeInbox, attestation_signer
from tessera.chain.bridge_orders import BridgeOrders
from tessera.chain.bridge_outbox import BridgeOutbox
from tessera.chain.client import Chain, tx_hash
from tessera.chain.devnet import TREASURY
from tessera.chain.market import Market
from tessera.chain.registry import ProviderRegistry
from tessera.chain.token_bridge import StakeBridge, TokenBridge
from tessera.chain.tokens import PaymentToken, StakeToken
from tessera.daemons import Daemons, raise_if_exited, stop, wait_healthy
from tessera.demo_cheater import VALIDATOR_ACCOUNTS, start_validators
from tessera.errors import BridgeError
from tessera.protocol.bridge import BPS, Message
from tessera.protocol.ledger import exact_amount
from tessera.protocol.money import STAKE_DECIMALS, STAKE_SYMBOL, format_amount
from tessera.tenant.bidding import money
from tessera.tenant.client import Tenant

# A block a second on both chains (transactions still mine at once): an attester waits for a
# message to be buried under 2 blocks, and the peer chain has no other traffic to bury it.
BLOCK_TIME_S = 1
RELAYER_ACCOUNT = TREASURY   # sends nothing else in the demo; any account could relay
REFUND_CHECK_S = 1.0         # the relayer reads what BridgeOrders owes each second (default 15)
CROSSING_TIMEOUT_S = 120.0
UNITS = "integer base units of TUSD (10^-6 TUSD); *_s are seconds"
STAKE_UNITS = "integer base units of TSTK (10^-18 TSTK)"



def tstk(amount: int) -> str:
    return format_amount(amount, STAKE_DECIMALS, STAKE_SYMBOL)


def devnet_options(chains: int) -> dict:
    """Devnet.up_anywhere's options for `tessera demo --chains N`: one chain as before, or two
    (on a pair of free ports) with a block timer."""
    if chains == 1:
        return {}
    return {"chains": 2, "block_time": BLOCK_TIME_S}


def delivery_signers(inbox: BridgeInbox, tx: str, message: Message) -> list[str]:
    """The committee members whose signatures delivery transaction `tx` carried."""
    chain = inbox.chain
    raw = chain.rpc(lambda: chain.w3.eth.get_transaction(tx), what="get transaction")
    _, args = inbox.contract.decode_function_input(raw["input"])
    epoch = inbox.epoch()
    return [attestation_signer(chain.network.chain_id, inbox.address, message.id, epoch, bytes(s))
            for s in args["signatures"]]


def start_relayer(home: Path, network_file: Path) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-m", "tessera.cli", "bridge", "relay", "--account",
               f"devnet:{RELAYER_ACCOUNT}", "--network", str(network_file),
               "--refund-check-s", str(REFUND_CHECK_S)]
    proc = subprocess.Popen(command, stdout=open(home / "relayer.log", "wb"),
                            stderr=subprocess.STDOUT, env={**os.environ, "TESSERA_HOME": str(home)})
    return proc, ""


@dataclass
class CrossChainAct:
    console: Console
    home: Chain                 # the tenant on the home chain: the demo's own Chain (its nonces)
    peer: Chain                 # the tenant on the peer chain
    parties: Daemons            # the validators and the relayer
    record: dict = field(default_factory=dict)
    _funding: dict = field(default_factory=dict)   # the tenant's report of its deposit's sending

    @classmethod
    def start(cls, console: Console, chain: Chain, home: Path, procs: Daemons) -> CrossChainAct:
        """Start the validators and the relayer (added to `procs`, which the caller stops)."""
        network = chain.network
        [peer] = network.peers
        console.rule("[bold]two chains")
        console.print(f"peer chain {peer.chain_id} at {peer.rpc_url}: "
                      + ", ".join(f"{k} {v}" for k, v in peer.contracts.items()))
        console.print(f"starting validators {', '.join(map(str, VALIDATOR_ACCOUNTS))} (the "
                      "bridge's committee, staked by `devnet up --chains 2`; each attests every "
                      "bridge message) and a `tessera bridge relay` process ...")
        network_file = home / "devnet" / "network.json"
        parties = {**start_validators(home, network_file),
                   "relayer": start_relayer(home, network_file)}
        procs.update(parties)
        wait_healthy({k: v for k, v in parties.items() if k != "relayer"})
        raise_if_exited(parties)
        act = cls(console, chain, Chain(network.peer(peer.chain_id), chain.account), parties)
        inbox = BridgeInbox(chain)
        act.record = {"units": UNITS, "home_chain": network.chain_id, "peer_chain": peer.chain_id,
                      "tenant": chain.address, "committee": inbox.committee(),
                      "threshold_bps": inbox.threshold_bps(),
                      "relayer": devnet_account(RELAYER_ACCOUNT).address,
                      "transfers": {}, "conservation": []}
        return act

    def stake_providers(self, accounts: list[LocalAccount], amount: int) -> None:
        """Each provider locks `amount` TSTK on the peer chain; StakeBridge mints it at home,
        where the provider process then stakes it (registration). All sent, then each waited."""
        peer_id = self.record["peer_chain"]
        self.console.rule("[bold]stake from the second chain")
        self.console.print(f"providers {', '.join(a.address for a in accounts)} stake from chain "
                           f"{peer_id}: each locks {tstk(amount)} in StakeBridge there; "
                           "the committee attests, the relayer delivers, and StakeBridge mints "
                           "it at home, where the provider registers with it", highlight=False)
        rows = []
        for account in accounts:
            home, peer = Chain(self.home.network, account), Chain(self.peer.network, account)
            rows.append({"provider": account.address,
                         "peer_before": StakeToken(peer).balance_of(account.address),
                         "home_before": StakeToken(home).balance_of(account.address),
                         "transfer": self._cross(peer, home, amount, "stake", StakeBridge)})
        self.record["stake"] = {"amount": amount, "providers": rows, "units": STAKE_UNITS}

    def stake_ledger(self) -> dict:
        """After the lease: where each bridged stake is (locked on the peer, staked at home), and
        the stake route's conservation (locked on the peer = minted at home, nothing in
        flight)."""
        s = self.record["stake"]
        for row in s["providers"]:
            who = row["provider"]
            row["peer_after"] = StakeToken(self.peer).balance_of(who)
            row["home_after"] = StakeToken(self.home).balance_of(who)
            row["staked_at_home"] = ProviderRegistry(self.home).provider_record(who)["stake"]
            row["adds_up"] = (row["peer_after"] == row["peer_before"] - s["amount"]
                              and row["home_after"] == row["home_before"]
                              and row["staked_at_home"] == s["amount"])
        peer_bridge, home_bridge = StakeBridge(self.peer), StakeBridge(self.home)
        s["locked_on_peer"] = StakeToken(self.peer).balance_of(peer_bridge.address)
        s["minted_on_home"] = (home_bridge.total_received() + home_bridge.total_bounced()
                               - home_bridge.total_sent())
        s["in_flight"] = (self._in_flight(self.peer, self.home, StakeBridge)
                          + self._in_flight(self.home, self.peer, StakeBridge))
        s["conserved"] = s["locked_on_peer"] == s["minted_on_home"] + s["in_flight"]
        return s

    def _balance(self, chain: Chain) -> int:
        return PaymentToken(chain).balance_of(chain.address)

    def pay_from_peer(self, tenant: Tenant) -> None:
        """The tenant's orders are funded from the peer chain, each in one bridge message
        (Tenant.pay_from): its deposit leaves the peer chain and the delivery opens the order
        at home. The crossing's conservation steps are read as the tenant's client reports it."""
        r = self.record
        r["balances"] = {"peer_before": self._balance(self.peer), "home_before": self._balance(self.home)}
        self.console.print(f"the tenant {self.home.address} holds "
                           f"{money(r['balances']['peer_before'])} on chain {r['peer_chain']}: its "
                           f"order's deposit is sent from there to BridgeOrders on chain "
                           f"{r['home_chain']}, whose delivery opens the order for it (one "
                           "message, no transaction of the tenant's at home); the order's "
                           "refunds go back to chain "
                           f"{r['peer_chain']}, sent by the relayer (the devnet funded the tenant "
                           f"at home too: that balance, {money(r['balances']['home_before'])}, "
                           "ends where it began)", highlight=False)
        self.step("before")
        tenant.pay_from = self.peer
        told = tenant.emit

        def on_event(event: str, data: dict) -> None:
            told(event, data)
            if event == "order-funding-sent":
                self._funding = data
                self.step(f"deposit sent ({r['peer_chain']} -> {r['home_chain']})")
            elif event == "order-posted" and "funded_by" in data:
                self.step("deposit delivered")
        tenant.emit = on_event

    def finish(self, lease: dict) -> dict:
        """After the order's leases closed (`lease`: the rental's summary, or the DiLoCo job's):
        the relayer sends the order's refunds back to the peer chain; record both crossings
        and show the ledger."""
        r, b = self.record, self.record["balances"]
        funding = self._funding
        message_id = bytes.fromhex(funding["message_id"][2:])
        r["transfers"]["deposit"] = self._arrival(self.peer, self.home, message_id,
                                                  funding["txs"], "deposit", live=False)
        orders = BridgeOrders(self.home)
        order_id = orders.funding(message_id).order_id
        deposit = orders.funding(message_id).amount
        refunded = Market(self.home).refunded(order_id)
        cost = deposit - refunded
        self.console.rule("[bold]back to the peer chain")
        r["transfers"]["returns"] = []
        leases = len(lease.get("workers", [])) or 1   # a DiLoCo job's summary lists its leases
        if refunded > 0:
            self.console.print(f"the {'lease' if leases == 1 else f'{leases} leases'} cost "
                               f"{money(cost)}; the order's refunds, {money(refunded)} (the "
                               "escrow no lease took, at once, then each lease's unspent "
                               "budget at its close), went to BridgeOrders, and the relayer "
                               f"sends each back to the tenant on chain {r['peer_chain']} ...")
            returns = self._returned(orders, message_id, refunded)
            self.step(f"return sent ({r['home_chain']} -> {r['peer_chain']})")
            for i, (transfer_id, tx) in enumerate(returns):
                r["transfers"]["returns"].append(self._arrival(
                    self.home, self.peer, transfer_id, [tx], "return", live=i == len(returns) - 1))
        b["peer_after"], b["home_after"] = self._balance(self.peer), self._balance(self.home)
        before, sent, landed = r["conservation"][:3]   # read from the chains, not assumed
        r["order"] = {"order_id": order_id, "bridge_orders": orders.address,
                      "funding_message_id": funding["message_id"]}
        r["ledger"] = {"locked_on_peer": sent["locked_on_peer"] - before["locked_on_peer"],
                       "minted_on_home": landed["minted_on_home"] - before["minted_on_home"],
                       "paid_for_compute": cost, "returned_to_peer": refunded,
                       "lease_tenant_spent": lease["tenant_spent"]}
        r["conserved"] = all(s["holds"] for s in r["conservation"])
        r["adds_up"] = (cost == lease["tenant_spent"]
                        and b["peer_after"] == b["peer_before"] - cost
                        and b["home_after"] == b["home_before"])
        r["amounts"] = {k: exact_amount(v) for k, v in {**r["ledger"], **b}.items()}
        self.stake_ledger()
        print_ledger(self.console, r)
        print_stake(self.console, r)
        return r

    def _returned(self, orders: BridgeOrders, message_id: bytes,
                  refunded: int) -> list[tuple[bytes, str]]:
        """Wait until the relayer has sent back all `refunded` of the funding (`send_back`, one
        per refund it found owed); each return's TokenBridge message id and tx."""
        deadline = time.monotonic() + CROSSING_TIMEOUT_S
        while True:
            raise_if_exited(self.parties)
            found = self.home.events("BridgeOrders", "Returned", self.home.network.deploy_block,
                                     argument_filters={"message_id": message_id})
            if sum(e["args"]["amount"] for e in found) >= refunded:
                return [(bytes(e["args"]["transfer_id"]), tx_hash(e)) for e in found]
            if time.monotonic() > deadline:
                raise BridgeError(f"the relayer did not send the order's refunds back within "
                                  f"{CROSSING_TIMEOUT_S:.0f} s; see relayer.log")
            time.sleep(0.1)

    def release_validators(self, procs: Daemons) -> None:
        """Stop the validators: the verification act starts its own under the same names and
        state folders (same accounts, already staked; they attest there too)."""
        for name in [n for n in self.parties if n.startswith("validator-")]:
            stop(procs.pop(name)[0])
            del self.parties[name]

    def _cross(self, source: Chain, destination: Chain, amount: int, what: str,
               kind: type[TokenBridge] = TokenBridge) -> dict:
        """Send `amount` with `kind` (TokenBridge: TUSD, StakeBridge: TSTK) from `source`'s
        account to itself on `destination`, wait for the delivery, and record it."""
        src, dst = source.network.chain_id, destination.network.chain_id
        message_id, receipts = kind(source).send(dst, source.address, amount)
        if kind is TokenBridge:
            self.step(f"{what} sent ({src} -> {dst})")
        return self._arrival(source, destination, message_id, [tx_hash(x) for x in receipts],
                             what, kind)

    def _arrival(self, source: Chain, destination: Chain, message_id: bytes, txs: list[str],
                 what: str, kind: type[TokenBridge] = TokenBridge, live: bool = True) -> dict:
        """Wait for the delivery of the transfer `message_id` (sent by `txs`, the last one the
        send itself) and record it: who attested, who it was delivered with, the bucket.
        `live`: read a conservation step at the delivery (not for a crossing recorded later)."""
        src, dst = source.network.chain_id, destination.network.chain_id
        show = kind.TOKEN(source).format
        inbox = BridgeInbox(destination)
        started = time.monotonic()
        [sent] = [s for s in BridgeOutbox(source).sent_in(source.w3.eth.get_transaction_receipt(txs[-1]))
                  if s.message.id == message_id]
        amount = sent.message.amount
        verb = "burned" if kind(source).mint_mode() else "locked"
        self.console.print(f"  {what}: {show(amount)} {verb} on chain {src}, tx "
                           f"{txs[-1]}: message 0x{message_id.hex()} (nonce "
                           f"{sent.message.nonce})", highlight=False)
        deadline = started + CROSSING_TIMEOUT_S
        while not inbox.delivered(message_id) or inbox.pending(message_id):
            raise_if_exited(self.parties)
            if time.monotonic() > deadline:
                raise BridgeError(f"the {what} message 0x{message_id.hex()} was not delivered on "
                                  f"chain {dst} within {CROSSING_TIMEOUT_S:.0f} s; see "
                                  "relayer.log and the validators' logs")
            time.sleep(0.1)
        [log] = destination.events("BridgeInbox", "MessageDelivered", destination.network.deploy_block,
                                   argument_filters={"message_id": message_id})
        # block times: the source block's to the delivery block's (1 s blocks on the demo's chains)
        seconds = (destination.block_timestamp(log["blockNumber"])
                   - source.block_timestamp(sent.block_number))
        delivered_with = delivery_signers(inbox, tx_hash(log), sent.message)
        attested = self.attestations(sent.message)
        value_sender = source.network.address(kind.NAME)   # its bucket on this route
        bucket = inbox.bucket(src, value_sender)
        t = {"direction": f"{src}->{dst}", "amount": amount, "message_id": "0x" + message_id.hex(),
             "nonce": sent.message.nonce, "source_tx": txs[-1],
             "source_txs": list(txs), "attested_by": attested,
             "delivered_with": delivered_with, "delivery_tx": tx_hash(log), "delivered": True,
             "seconds": seconds, "bucket": {"left_after_delivery": bucket.tokens,
                                            "available": inbox.available(src, value_sender),
                                            "capacity": bucket.capacity,
                                            "refill_per_s": bucket.refill_per_s}}
        epoch = inbox.epoch()
        share = sum(inbox.weight_of(epoch, s) for s in delivered_with) * BPS // inbox.total_weight(epoch)
        self.console.print(f"  attested by {len(attested)} of {len(self.record['committee'])} "
                           f"validators; the relayer delivered it with the signatures of "
                           f"{', '.join(delivered_with)} ({share / 100:.2f} "
                           f"% of the weight, {self.record['threshold_bps'] / 100:.2f} % needed) "
                           f"on chain {dst}, tx {tx_hash(log)}", highlight=False)
        self.console.print(f"  {seconds} s from the sending block to the delivery block; "
                           f"{kind.NAME}'s bucket {src} "
                           f"-> {dst}: {show(bucket.tokens)} of {show(bucket.capacity)} left after "
                           f"it (refills {show(bucket.refill_per_s)}/s)", highlight=False)
        if kind is TokenBridge and live:
            self.step(f"{what} delivered")
        return t

    def attestations(self, m: Message, wait_s: float = 10.0) -> list[dict]:
        """Each validator's attestation of `m` as its endpoint serves it (waiting a little for
        members that the relayer did not need)."""
        urls = {n: url for n, (_, url) in self.parties.items() if n.startswith("validator-")}
        found: dict[str, dict] = {}
        deadline = time.monotonic() + wait_s
        while len(found) < len(urls) and time.monotonic() < deadline:
            for name, url in urls.items():
                try:
                    reply = httpx.get(f"{url}/bridge/attestations",
                                      params={"source": m.source_chain, "nonce": m.nonce}, timeout=2)
                except httpx.HTTPError:
                    continue
                doc = reply.json() if reply.status_code == 200 else {}
                if doc.get("message_id") == "0x" + m.id.hex():
                    found[name] = {"signer": doc["signer"], "epoch": doc["epoch"],
                                   "block_number": doc["block_number"]}
            time.sleep(0.2)
        return [found[n] for n in sorted(found)]

    def step(self, name: str, tries: int = 50) -> None:
        """Record one conservation check: locked on the peer = minted at home + in flight."""
        home_bridge, peer_bridge = TokenBridge(self.home), TokenBridge(self.peer)
        for _ in range(tries):
            blocks = self.home.block_number(), self.peer.block_number()
            locked = peer_bridge.token_wrapper.balance_of(peer_bridge.address)
            minted = (home_bridge.total_received() + home_bridge.total_bounced()
                      - home_bridge.total_sent())
            flight = self._in_flight(self.peer, self.home) + self._in_flight(self.home, self.peer)
            if (self.home.block_number(), self.peer.block_number()) == blocks:
                break   # no block, so no delivery, while it was read: one consistent state
        else:
            raise BridgeError(f"the chains made a block during each of {tries} reads of the "
                              "bridge's balances")
        self.record["conservation"].append({
            "step": name, "home_block": blocks[0], "peer_block": blocks[1], "locked_on_peer": locked,
            "minted_on_home": minted, "in_flight": flight, "holds": locked == minted + flight})

    @staticmethod
    def _in_flight(source: Chain, destination: Chain, kind: type[TokenBridge] = TokenBridge) -> int:
        """Value `kind` sent from `source` that `destination`'s inbox has not delivered (or
        holds queued)."""
        sender, inbox = kind(source).address, BridgeInbox(destination)
        return sum(s.message.amount for s in BridgeOutbox(source).messages(
                       source.network.deploy_block, destination_chain=destination.network.chain_id)
                   if s.message.sender.lower() == sender.lower()
                   and (not inbox.delivered(s.message.id) or inbox.pending(s.message.id)))


def print_ledger(console: Console, r: dict) -> None:
    b, led = r["balances"], r["ledger"]
    peer, home = r["peer_chain"], r["home_chain"]
    table = Table(title=f"the tenant's TUSD across chains {peer} and {home}")
    table.add_column("")
    table.add_column("amount", justify="right")
    for label, value in ((f"TUSD on chain {peer} before", b["peer_before"]),
                         (f"locked on {peer} (bridged to {home})", led["locked_on_peer"]),
                         (f"minted on {home}", led["minted_on_home"]),
                         (f"paid for compute on {home} (provider + fee)", led["paid_for_compute"]),
                         (f"burned on {home}, returned to {peer}", led["returned_to_peer"]),
                         (f"TUSD on chain {peer} after", b["peer_after"])):
        table.add_row(label, money(value))
    console.print(table)
    last = r["conservation"][-1]
    console.print(
        f"{'[bold green]adds up[/]' if r['adds_up'] else '[bold red]does NOT add up[/]'}: "
        f"{money(b['peer_before'])} - {money(led['paid_for_compute'])} = "
        f"{money(b['peer_after'])} on chain {peer}; the tenant's balance on chain {home} "
        f"ends where it began ({money(b['home_after'])}). Conservation "
        f"{'held' if r['conserved'] else '[red]FAILED[/]'} at all "
        f"{len(r['conservation'])} steps: now {money(last['locked_on_peer'])} locked on "
        f"{peer} = {money(last['minted_on_home'])} minted on {home} and outstanding + "
        f"{money(last['in_flight'])} in flight", highlight=False)


def print_stake(console: Console, r: dict) -> None:
    s, peer, home = r["stake"], r["peer_chain"], r["home_chain"]
    table = Table(title=f"the providers' stake, locked on chain {peer} and staked on {home}")
    for column in ("provider", f"TSTK on {peer} before", "after", f"staked on {home}",
                   f"own TSTK on {home} before", "after"):
        table.add_column(column, justify="left" if column == "provider" else "right")
    for row in s["providers"]:
        table.add_row(row["provider"], tstk(row["peer_before"]),
                      tstk(row["peer_after"]), tstk(row["staked_at_home"]),
                      tstk(row["home_before"]), tstk(row["home_after"]))
    console.print(table)
    held = all(row["adds_up"] for row in s["providers"])
    console.print(
        f"{'[bold green]adds up[/]' if held else '[bold red]does NOT add up[/]'}: each "
        f"provider's stake on {home} is what it locked on {peer}, its own TSTK on {home} "
        f"untouched. StakeBridge on {peer} holds {tstk(s['locked_on_peer'])} = "
        f"{tstk(s['minted_on_home'])} minted on {home} + "
        f"{tstk(s['in_flight'])} in flight: "
        f"{'conserved' if s['conserved'] else '[red]NOT conserved[/]'}. A slash on {home} "
        f"pays the slashed TSTK to its recipient there, which redeems the stake locked on "
        f"{peer} (docs/bridge.md)", highlight=False)
