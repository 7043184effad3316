"""A seeded, randomized market on a local anvil devnet: providers, orders, leases, payouts, slashes.

For the explorer's tests and benchmark. Transactions go through anvil's unlocked test accounts
(`eth_sendTransaction`, anvil signs), in JSON-RPC batches, with automine off: each `mine()` puts
every queued transaction into one block at a chosen timestamp, so many leases cost few blocks.
Every transaction must succeed; the workload keeps a small model of each lease (the contract's
`earned` formula) to pick only valid actions. Devnet only: it relies on anvil's dev RPC methods.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

import requests
from web3 import Web3

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain
from tessera.chain.devnet import DEPLOYER
from tessera.chain.network import Network
from tessera.errors import WorkloadError
from tessera.protocol import messages
from tessera.protocol.lease import accrued_at, order_deposit
from tessera.protocol.money import PAYMENT_DECIMALS, STAKE_DECIMALS

MODELS = ("H100", "A100", "RTX4090")
TUSD = 10**PAYMENT_DECIMALS
TSTK = 10**STAKE_DECIMALS
GAS = 900_000
MAX_UINT = 2**256 - 1


@dataclass
class SimLease:
    lease_id: int
    tenant: str
    provider: str
    price: int
    gpus: int
    start: int
    budget: int
    paid: int = 0
    closed: bool = False

    def earned(self, t: int) -> int:
        return accrued_at(self.price, self.gpus, self.budget, self.start, t)


@dataclass
class SimProvider:
    index: int
    address: str
    model: str
    gpus: int
    floor: int
    stake: int
    active: bool = True
    jailed_until: int = 0


class Workload:
    def __init__(self, network: Network, seed: int = 0, providers=range(2, 8), tenants=(8, 9, 0)):
        self.network = network
        self.url = network.rpc_url
        self.rng = random.Random(seed)
        chain = Chain(network)
        self.w3 = chain.w3
        self.market, self.registry = chain.market, chain.registry
        self.payment, self.stake = chain.payment_token, chain.stake_token
        self.chain_id = network.chain_id
        self.provider_ids = list(providers)
        self.tenants = [devnet_account(i).address for i in tenants]
        self.deployer = devnet_account(DEPLOYER).address
        self.providers: dict[str, SimProvider] = {}
        self.leases: dict[int, SimLease] = {}
        self.queue: list[dict] = []
        self.sent = 0
        self.nonce_counter = itertools.count(1)
        self.ids = itertools.count(1)
        self._rpc("evm_setAutomine", [False])
        self._rpc("evm_setBlockGasLimit", [hex(2**40)])
        self.now = int(self._rpc("eth_getBlockByNumber", ["latest", False])["timestamp"], 16)

    # -- plumbing --------------------------------------------------------------------------
    def _rpc(self, method: str, params: list):
        body = {"jsonrpc": "2.0", "id": next(self.ids), "method": method, "params": params}
        reply = requests.post(self.url, json=body, timeout=60).json()
        if "error" in reply:
            raise WorkloadError(f"{method}: {reply['error']}")
        return reply["result"]

    def _batch(self, calls: list[tuple[str, list]]) -> list:
        out = []
        for i in range(0, len(calls), 500):
            body = [{"jsonrpc": "2.0", "id": j, "method": m, "params": p}
                    for j, (m, p) in enumerate(calls[i:i + 500])]
            replies = sorted(requests.post(self.url, json=body, timeout=120).json(),
                             key=lambda r: r["id"])
            out.extend(replies)
        return out

    def send(self, sender: str, contract, fn: str, *args) -> None:
        data = contract.encode_abi(fn, args=list(args))
        self.queue.append({"from": sender, "to": contract.address, "data": data, "gas": hex(GAS),
                           "_what": f"{fn}{tuple(args)!r:.80}"})

    def mine(self, advance: int = 1) -> list[dict]:
        """Send every queued transaction, mine them in one block `advance` seconds later, check them."""
        self.now += max(advance, 1)
        # Explicit nonces (batched sends would race for the pending nonce); everything before
        # this block is mined, so the latest count is the next nonce, even after evm_revert.
        senders = sorted({tx["from"] for tx in self.queue})
        counts = self._batch([("eth_getTransactionCount", [s, "latest"]) for s in senders])
        nonces = {s: int(r["result"], 16) for s, r in zip(senders, counts, strict=True)}
        for tx in self.queue:
            tx["nonce"] = hex(nonces[tx["from"]])
            nonces[tx["from"]] += 1
        calls = [("eth_sendTransaction", [{k: v for k, v in tx.items() if not k.startswith("_")}])
                 for tx in self.queue]
        replies = self._batch(calls) if calls else []
        for tx, reply in zip(self.queue, replies, strict=True):
            if "error" in reply:
                raise WorkloadError(f"{tx['_what']} not accepted: {reply['error']}")
        hashes = [r["result"] for r in replies]
        what = [tx["_what"] for tx in self.queue]
        self.queue = []
        self._rpc("evm_setNextBlockTimestamp", [self.now])
        self._rpc("evm_mine", [])
        receipts = []
        pending = list(zip(hashes, what, strict=True))
        for _ in range(20):
            got = self._batch([("eth_getTransactionReceipt", [h]) for h, _ in pending])
            missing = []
            for (h, w), reply in zip(pending, got, strict=True):
                if reply.get("result") is None:
                    missing.append((h, w))
                    continue
                if int(reply["result"]["status"], 16) != 1:
                    raise WorkloadError(f"{w} reverted (tx {h})")
                receipts.append(reply["result"])
            if not missing:
                break
            pending = missing
            self.now += 1
            self._rpc("evm_setNextBlockTimestamp", [self.now])
            self._rpc("evm_mine", [])
        else:
            raise WorkloadError("transactions stayed pending")
        self.sent += len(hashes)
        return receipts

    def _logs(self, receipts: list[dict], contract, event: str) -> list[dict]:
        """Decode `event` from raw JSON receipts (hex strings) without another round trip."""
        from eth_utils import event_abi_to_log_topic
        from hexbytes import HexBytes

        handle = getattr(contract.events, event)()
        topic = "0x" + event_abi_to_log_topic(handle.abi).hex()
        out = []
        for receipt in receipts:
            for log in receipt["logs"]:
                if log["address"].lower() != contract.address.lower() or log["topics"][0] != topic:
                    continue
                decoded = handle.process_log({
                    "address": Web3.to_checksum_address(log["address"]),
                    "topics": [HexBytes(t) for t in log["topics"]], "data": HexBytes(log["data"]),
                    "blockNumber": int(log["blockNumber"], 16), "blockHash": HexBytes(log["blockHash"]),
                    "transactionHash": HexBytes(log["transactionHash"]),
                    "transactionIndex": int(log["transactionIndex"], 16),
                    "logIndex": int(log["logIndex"], 16)})
                out.append(dict(decoded["args"]))
        return out

    # -- the market ------------------------------------------------------------------------
    def setup(self, slasher: bool = True) -> None:
        """Register the providers (random hardware and floors) and approve tokens."""
        for tenant in self.tenants:
            self.send(tenant, self.payment, "approve", self.market.address, MAX_UINT)
            self.send(self.deployer, self.payment, "mint", tenant, 10_000_000 * TUSD)
        if slasher:
            # The deployer stands in for a slashing contract. The registry's owner is the
            # Timelock (a grant waits two days, tested in tests/contracts/test_timelock.py);
            # this devnet-only workload speaks as the timelock through anvil instead.
            owner = self.network.address("Timelock")
            self._rpc("anvil_impersonateAccount", [owner])
            self._rpc("anvil_setBalance", [owner, hex(10**18)])
            self.send(owner, self.registry, "set_slasher", self.deployer, True)
        for i in self.provider_ids:
            address = devnet_account(i).address
            p = SimProvider(i, address, self.rng.choice(MODELS), self.rng.randint(1, 8),
                            self.rng.randint(5, 30) * TUSD // 10, self.rng.randint(100, 300) * TSTK)
            self.providers[address] = p
            self.send(address, self.stake, "approve", self.registry.address, MAX_UINT)
            self.send(address, self.registry, "register", p.stake, p.model, p.gpus, 81920,
                      1000 + i, f"http://127.0.0.1:{7000 + i}", p.floor)
        self.mine()

    def fits(self, p: SimProvider, model: str, min_gpus: int, t: int) -> bool:
        return (p.active and t >= p.jailed_until and p.gpus >= min_gpus
                and (model == "" or model == p.model) and p.floor <= 5 * TUSD)

    def round(self, orders: int, advance: int, act: float = 0.6) -> int:
        """New orders and their leases, then time passes and leases are paid, topped up or closed."""
        rng = self.rng
        specs = []
        for _ in range(orders):
            tenant = rng.choice(self.tenants)
            model = rng.choice((*MODELS, ""))
            min_gpus = rng.randint(1, 2)
            nodes = rng.randint(1, 3)
            duration = rng.randint(1800, 6 * 3600)
            max_price = 5 * TUSD
            deposit = order_deposit(max_price, min_gpus, nodes, duration) + rng.randint(0, 3) * TUSD
            spec_hash = rng.randbytes(32)
            self.send(tenant, self.market, "create_order", spec_hash, model, min_gpus, 0, max_price,
                      duration, nodes, deposit, False)
            specs.append((tenant, model, min_gpus, nodes))
        created = self._logs(self.mine(), self.market, "OrderCreated")
        t = self.now + 1
        made = 0
        cancel = []
        for order in created:
            fitting = [p for p in self.providers.values()
                       if self.fits(p, order["gpu_model"], order["min_gpus"], t)]
            chosen = rng.sample(fitting, min(order["nodes"], len(fitting)))
            for p in chosen:
                price = rng.randint(p.floor, 5 * TUSD)
                nonce = next(self.nonce_counter)
                typed = messages.bid_typed_data(self.chain_id, self.market.address, order["order_id"],
                                                p.address, price, nonce, 2**40)
                signature = messages.sign(devnet_account(p.index), typed)
                self.send(order["tenant"], self.market, "accept_bid", order["order_id"], p.address,
                          price, nonce, 2**40, bytes.fromhex(signature[2:]))
                made += 1
            if len(chosen) < order["nodes"] and rng.random() < 0.5:
                cancel.append(order)
        for order in cancel:   # cancel after the accepts (same sender, so nonce order holds)
            self.send(order["tenant"], self.market, "cancel_order", order["order_id"])
        for lease in self._logs(self.mine(), self.market, "LeaseCreated"):
            self.leases[lease["lease_id"]] = SimLease(
                lease["lease_id"], lease["tenant"], lease["provider"], lease["price_per_gpu_hour"],
                lease["gpus"], lease["start"], lease["budget"])
        # Time passes; then one money action per open lease, at most.
        t = self.now + advance
        for lease in self.leases.values():
            if lease.closed or rng.random() > act:
                continue
            choice = rng.random()
            earned = lease.earned(t)
            if choice < 0.35:
                self.send(lease.tenant if rng.random() < 0.7 else lease.provider, self.market,
                          "close_lease", lease.lease_id)
                lease.closed, lease.paid = True, earned
            elif choice < 0.75 and earned > lease.paid:
                self.send(lease.provider, self.market, "withdraw", lease.lease_id)
                lease.paid = earned
            elif choice < 0.9 and earned < lease.budget:
                amount = rng.randint(1, 20) * TUSD
                self.send(lease.tenant, self.market, "top_up", lease.lease_id, amount)
                lease.budget += amount
            else:
                self.send(lease.provider, self.market, "commit_result", lease.lease_id,
                          rng.randbytes(32))
        self._provider_events(t)
        self.mine(advance)
        return made

    def _provider_events(self, t: int) -> None:
        rng = self.rng
        for p in self.providers.values():
            roll = rng.random()
            if roll < 0.05:
                self.send(p.address, self.registry, "add_stake", 50 * TSTK)
                p.stake += 50 * TSTK
                p.active = p.stake >= 100 * TSTK
            elif roll < 0.08 and p.stake > 0:
                amount = rng.choice((p.stake, p.stake // 4 or p.stake))
                self.send(p.address, self.registry, "request_unbond", amount)
                p.stake -= amount
                p.active = p.stake >= 100 * TSTK
            elif roll < 0.11:
                amount = rng.randint(1, 80) * TSTK
                self.send(self.deployer, self.registry, "slash", p.address, amount, self.deployer)
                p.stake -= min(amount, p.stake)
                p.active = p.stake >= 100 * TSTK
            elif roll < 0.14:
                p.floor = rng.randint(5, 30) * TUSD // 10
                if rng.random() < 0.5:
                    p.model = rng.choice(MODELS)
                self.send(p.address, self.registry, "update_offer", p.model, p.gpus, 81920, 1000,
                          f"http://127.0.0.1:{7000 + p.index}", p.floor)
            elif roll < 0.16:
                p.jailed_until = t + 1800
                self.send(self.deployer, self.registry, "jail", p.address, p.jailed_until)

    def run(self, leases: int, orders_per_round: int, advance=(600, 30_000)) -> int:
        """Rounds until at least `leases` leases exist; returns how many."""
        self.setup()
        while len(self.leases) < leases:
            self.round(orders_per_round, self.rng.randint(*advance))
            if not any(p.active for p in self.providers.values()):
                for p in self.providers.values():
                    self.send(p.address, self.registry, "add_stake", 200 * TSTK)
                    p.stake += 200 * TSTK
                    p.active = True
                self.mine()
        return len(self.leases)

    def restore_automine(self) -> None:
        self._rpc("evm_setAutomine", [True])
