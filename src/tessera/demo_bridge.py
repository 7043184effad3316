"""The demo's cross-chain act (`tessera demo --chains 2`): the bidding providers' stake and the
tenant's TUSD are on the second chain. Each provider locks its stake there (StakeBridge) and
registers at home with what is minted for it; the tenant bridges the job's deposit to the home
chain, rents there exactly as the one-chain demo does (demo.py calls the same run_rental), and
bridges what the lease did not cost back.

Real parts: the two-chain devnet (two anvil nodes; `Devnet.up(chains=2)` deploys the bridge and
registers devnet accounts 7, 8, 9 as validators, the bridge's genesis committee); those three
validators run from the start as `tessera validator run` processes (demo_cheater's
start_validators, the config the verification act uses), attesting each bridge message as part
of their duties; one `tessera bridge relay` process collects their signatures and delivers.
The tenant's transfers are `TokenBridge.send` on each chain; the demo itself delivers nothing.

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
from tessera.chain.bridge_outbox import BridgeOutbox
from tessera.chain.client import Chain, tx_hash
from tessera.chain.devnet import TREASURY
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

# A block a second on both chains (transactions still mine at once): an attester waits for a
# message to be buried under 2 blocks, and the peer chain has no other traffic to bury it.
BLOCK_TIME_S = 1
MARGIN = 250_000             # TUSD base units bridged beyond the order's escrow (0.25 TUSD)
RELAYER_ACCOUNT = TREASURY   # sends nothing else in the demo; any account could relay
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
               f"devnet:{RELAYER_ACCOUNT}", "--network", str(network_file)]
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

    def fund(self, escrow: int) -> None:
        """Bridge the order's escrow plus MARGIN from the peer chain to the tenant at home."""
        r = self.record
        r["balances"] = {"peer_before": self._balance(self.peer), "home_before": self._balance(self.home)}
        amount = escrow + MARGIN
        self.console.print(f"the tenant {self.home.address} holds "
                           f"{money(r['balances']['peer_before'])} on chain {r['peer_chain']}; it "
                           f"bridges the job's deposit {money(escrow)} + {money(MARGIN)} margin "
                           f"to itself on chain {r['home_chain']} (the devnet funded it there "
                           f"too: that balance, {money(r['balances']['home_before'])}, ends where "
                           "it began, so the lease is paid from the peer chain)", highlight=False)
        self.step("before")
        r["transfers"]["deposit"] = self._cross(self.peer, self.home, amount, "deposit")
        r["balances"]["home_after_deposit"] = self._balance(self.home)

    def finish(self, lease: dict) -> dict:
        """After the lease's close: bridge back what it did not cost, show the ledger."""
        r, b = self.record, self.record["balances"]
        bridged = r["transfers"]["deposit"]["amount"]
        b["home_after_lease"] = self._balance(self.home)
        cost = b["home_after_deposit"] - b["home_after_lease"]
        self.console.rule("[bold]back to the peer chain")
        returned = bridged - cost
        if returned > 0:
            self.console.print(f"the lease cost {money(cost)}; the tenant bridges the unused "
                               f"{money(returned)} back to chain {r['peer_chain']}")
            r["transfers"]["return"] = self._cross(self.home, self.peer, returned, "return")
        b["peer_after"], b["home_after"] = self._balance(self.peer), self._balance(self.home)
        before, sent, landed = r["conservation"][:3]   # read from the chains, not assumed
        r["ledger"] = {"locked_on_peer": sent["locked_on_peer"] - before["locked_on_peer"],
                       "minted_on_home": landed["minted_on_home"] - before["minted_on_home"],
                       "paid_for_compute": cost, "returned_to_peer": max(returned, 0),
                       "lease_tenant_spent": lease["tenant_spent"]}
        r["conserved"] = all(s["holds"] for s in r["conservation"])
        r["adds_up"] = (cost == lease["tenant_spent"]
                        and b["peer_after"] == b["peer_before"] - cost
                        and b["home_after"] == b["home_before"])
        r["amounts"] = {k: exact_amount(v) for k, v in {**r["ledger"], **b}.items()}
        self.stake_ledger()
        self.print_ledger()
        self.print_stake()
        return r

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
        show = kind.TOKEN(source).format
        inbox = BridgeInbox(destination)
        first = destination.block_number()
        started = time.monotonic()
        message_id, receipts = kind(source).send(dst, source.address, amount)
        [sent] = BridgeOutbox(source).sent_in(receipts[-1])
        verb = "burned" if kind(source).mint_mode() else "locked"
        self.console.print(f"  {what}: {show(amount)} {verb} on chain {src}, tx "
                           f"{tx_hash(receipts[-1])}: message 0x{message_id.hex()} (nonce "
                           f"{sent.message.nonce})", highlight=False)
        if kind is TokenBridge:
            self.step(f"{what} sent ({src} -> {dst})")
        deadline = started + CROSSING_TIMEOUT_S
        while not inbox.delivered(message_id) or inbox.pending(message_id):
            raise_if_exited(self.parties)
            if time.monotonic() > deadline:
                raise BridgeError(f"the {what} message 0x{message_id.hex()} was not delivered on "
                                  f"chain {dst} within {CROSSING_TIMEOUT_S:.0f} s; see "
                                  "relayer.log and the validators' logs")
            time.sleep(0.1)
        seconds = round(time.monotonic() - started, 1)
        [log] = destination.events("BridgeInbox", "MessageDelivered", first,
                                   argument_filters={"message_id": message_id})
        delivered_with = delivery_signers(inbox, tx_hash(log), sent.message)
        attested = self.attestations(sent.message)
        value_sender = source.network.address(kind.NAME)   # its bucket on this route
        bucket = inbox.bucket(src, value_sender)
        t = {"direction": f"{src}->{dst}", "amount": amount, "message_id": "0x" + message_id.hex(),
             "nonce": sent.message.nonce, "source_tx": tx_hash(receipts[-1]),
             "source_txs": [tx_hash(x) for x in receipts], "attested_by": attested,
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
        self.console.print(f"  {seconds} s from sending to delivery; {kind.NAME}'s bucket {src} "
                           f"-> {dst}: {show(bucket.tokens)} of {show(bucket.capacity)} left after "
                           f"it (refills {show(bucket.refill_per_s)}/s)", highlight=False)
        if kind is TokenBridge:
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

    def print_ledger(self) -> None:
        r, b, led = self.record, self.record["balances"], self.record["ledger"]
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
        self.console.print(table)
        last = r["conservation"][-1]
        self.console.print(
            f"{'[bold green]adds up[/]' if r['adds_up'] else '[bold red]does NOT add up[/]'}: "
            f"{money(b['peer_before'])} - {money(led['paid_for_compute'])} = "
            f"{money(b['peer_after'])} on chain {peer}; the tenant's balance on chain {home} "
            f"ends where it began ({money(b['home_after'])}). Conservation "
            f"{'held' if r['conserved'] else '[red]FAILED[/]'} at all "
            f"{len(r['conservation'])} steps: now {money(last['locked_on_peer'])} locked on "
            f"{peer} = {money(last['minted_on_home'])} minted on {home} and outstanding + "
            f"{money(last['in_flight'])} in flight", highlight=False)

    def print_stake(self) -> None:
        s, peer, home = self.record["stake"], self.record["peer_chain"], self.record["home_chain"]
        table = Table(title=f"the providers' stake, locked on chain {peer} and staked on {home}")
        for column in ("provider", f"TSTK on {peer} before", "after", f"staked on {home}",
                       f"own TSTK on {home} before", "after"):
            table.add_column(column, justify="left" if column == "provider" else "right")
        for row in s["providers"]:
            table.add_row(row["provider"], tstk(row["peer_before"]),
                          tstk(row["peer_after"]), tstk(row["staked_at_home"]),
                          tstk(row["home_before"]), tstk(row["home_after"]))
        self.console.print(table)
        held = all(row["adds_up"] for row in s["providers"])
        self.console.print(
            f"{'[bold green]adds up[/]' if held else '[bold red]does NOT add up[/]'}: each "
            f"provider's stake on {home} is what it locked on {peer}, its own TSTK on {home} "
            f"untouched. StakeBridge on {peer} holds {tstk(s['locked_on_peer'])} = "
            f"{tstk(s['minted_on_home'])} minted on {home} + "
            f"{tstk(s['in_flight'])} in flight: "
            f"{'conserved' if s['conserved'] else '[red]NOT conserved[/]'}. A slash on {home} "
            f"pays the slashed TSTK to its recipient there, which redeems the stake locked on "
            f"{peer} (docs/bridge.md)", highlight=False)
