"""Many provider identities behind real HTTP servers, and their registration on a devnet: what the
bid-collection test (tests/tenant/test_bid_collection.py) and bench/scale_bids.py ask.

A `Farm` is one asyncio loop serving identities, each on a port of its own (so each is its own
TCP peer, as independent providers are), answering `GET /orders/{id}/bid` as its kind says:

  live       its signed bid for the order (signed once per order, or ahead by `prepare`)
  slow       the same, after `slow_s` seconds (past the tenant's per-provider deadline)
  blackhole  takes the connection and never answers
  notyet     404 the first time it is asked about an order, its bid after that
  junk-500, junk-text, junk-huge, junk-other   a 500; text that is no bid; 1 MB; another's bid
  refused    no server at all (`refused_port` reserves a port nobody listens on)

`python -m tests.tenant.many_providers SPEC.json` runs a farm in its own process and prints one
JSON line, {"ports": [...], "control": port}; `GET /stats` on the control port answers the
requests seen per identity, `POST /prepare/{order_id}` signs every bid of the order ahead.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import sys
import threading
import time
from dataclasses import dataclass

from eth_account import Account

from tessera.protocol import messages
from tessera.protocol.wire import BidMessage

LISTENING = ("live", "slow", "blackhole", "notyet", "junk-500", "junk-text", "junk-huge", "junk-other")


@dataclass
class Identity:
    key: str           # 0x private key
    kind: str
    price: int         # per GPU-hour, base units (its floor)

    @property
    def address(self) -> str:
        return Account.from_key(self.key).address


def refused_port() -> int:
    """A port nothing listens on (bound, then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Farm:
    def __init__(self, identities: list[Identity], chain_id: int, market: str, slow_s: float = 5.0):
        self.identities, self.chain_id, self.market, self.slow_s = identities, chain_id, market, slow_s
        self.accounts = [Account.from_key(i.key) for i in identities]
        self.signed: dict[tuple[int, int], bytes] = {}     # (identity, order) -> JSON body
        self.asked: dict[int, int] = {}                     # identity -> requests
        self.ports: list[int | None] = []
        self.control: int | None = None
        self._servers: list = []

    def bid(self, n: int, order_id: int) -> bytes:
        if (n, order_id) not in self.signed:
            account, identity = self.accounts[n], self.identities[n]
            nonce, expiry = secrets.randbits(64), int(time.time()) + 600
            typed = messages.bid_typed_data(self.chain_id, self.market, order_id, account.address,
                                            identity.price, nonce, expiry)
            self.signed[(n, order_id)] = BidMessage(
                order_id=order_id, provider=account.address, price_per_gpu_hour=identity.price,
                nonce=nonce, expiry=expiry,
                signature=messages.sign(account, typed)).model_dump_json().encode()
        return self.signed[(n, order_id)]

    def prepare(self, order_id: int) -> int:
        live = [n for n, i in enumerate(self.identities) if i.kind in ("live", "slow", "notyet")]
        for n in live:
            self.bid(n, order_id)
        return len(live)

    async def _answer(self, n: int, path: str) -> tuple[int, bytes] | None:
        kind = self.identities[n].kind
        parts = path.strip("/").split("/")
        if len(parts) != 3 or parts[0] != "orders" or parts[2] != "bid" or not parts[1].isdigit():
            return 404, b'{"detail": "not found"}'
        order_id = int(parts[1])
        self.asked[n] = self.asked.get(n, 0) + 1
        if kind == "blackhole":
            await asyncio.sleep(3600)
        if kind == "slow":
            await asyncio.sleep(self.slow_s)
        if kind == "notyet" and self.asked[n] == 1:
            return 404, b'{"detail": "no bid for this order yet"}'
        if kind == "junk-500":
            return 500, b"Internal Server Error"
        if kind == "junk-text":
            return 200, b"<html>hello</html>"
        if kind == "junk-huge":
            return 200, b"[" + b"1," * 500_000 + b"1]"
        if kind == "junk-other":
            return 200, self.bid((n + 1) % len(self.identities), order_id)
        return 200, self.bid(n, order_id)

    async def _control(self, method: str, path: str) -> tuple[int, bytes]:
        if method == "POST" and path.startswith("/prepare/"):
            return 200, json.dumps({"signed": self.prepare(int(path.rsplit("/", 1)[1]))}).encode()
        if path == "/stats":
            return 200, json.dumps({"asked": {str(k): v for k, v in self.asked.items()}}).encode()
        return 404, b"{}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     n: int | None) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                method, path = head.split(b"\r\n", 1)[0].decode().split(" ")[:2]
                answer = await (self._control(method, path) if n is None else self._answer(n, path))
                status, body = answer
                writer.write(f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\n"
                             f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError,
                ValueError):
            pass
        finally:
            writer.close()

    async def start(self) -> None:
        for n, identity in enumerate(self.identities):
            if identity.kind not in LISTENING:
                self.ports.append(None)
                continue
            server = await asyncio.start_server(
                lambda r, w, n=n: self._serve(r, w, n), "127.0.0.1", 0, backlog=64)
            self._servers.append(server)
            self.ports.append(server.sockets[0].getsockname()[1])
        control = await asyncio.start_server(lambda r, w: self._serve(r, w, None), "127.0.0.1", 0)
        self._servers.append(control)
        self.control = control.sockets[0].getsockname()[1]

    def start_in_thread(self) -> Farm:
        """Serve from a daemon thread of this process (tests); returns when listening."""
        ready = threading.Event()
        self.loop = asyncio.new_event_loop()

        def run():
            asyncio.set_event_loop(self.loop)
            self.loop.run_until_complete(self.start())
            ready.set()
            self.loop.run_forever()

        threading.Thread(target=run, daemon=True).start()
        ready.wait(30)
        return self

    def endpoints(self) -> list[str]:
        """Each identity's endpoint URL (a refused one gets a port nobody listens on)."""
        return [f"http://127.0.0.1:{port or refused_port()}" for port in self.ports]


def register(network, identities: list[Identity], endpoints: list[str], *, gpu_model: str,
             gpu_count: int = 1, gpu_memory_mb: int = 81_920, stake: int = 100 * 10**18,
             slasher: bool = False):
    """Register every identity on a devnet with its endpoint, in batches (anvil impersonates
    them: explorer/simulate.py's Workload), then turn automine back on. The Workload, for more
    registry actions (jail, slash: `slasher=True` makes the deployer a slasher)."""
    from tessera.explorer.simulate import MAX_UINT, Workload

    work = Workload(network, providers=(), tenants=())
    work._rpc("anvil_autoImpersonateAccount", [True])
    work.setup(slasher=slasher)
    addresses = [i.address for i in identities]
    work._batch([("anvil_setBalance", [a, hex(10**21)]) for a in addresses])
    for address in addresses:
        work.send(work.deployer, work.stake, "transfer", address, stake)
    work.mine()
    for n, (identity, address, endpoint) in enumerate(zip(identities, addresses, endpoints,
                                                          strict=True), 1):
        work.send(address, work.stake, "approve", work.registry.address, MAX_UINT)
        work.send(address, work.registry, "register", stake, gpu_model, gpu_count,
                  gpu_memory_mb, 1000 + n, endpoint, identity.price)
        if n % 250 == 0:
            work.mine()
    work.mine()
    work._rpc("evm_setAutomine", [True])
    return work


def main(argv: list[str]) -> None:
    spec = json.loads(open(argv[0]).read())
    farm = Farm([Identity(**i) for i in spec["identities"]], spec["chain_id"], spec["market"],
                spec.get("slow_s", 5.0))

    async def run():
        await farm.start()
        print(json.dumps({"ports": farm.ports, "control": farm.control}), flush=True)
        await asyncio.Event().wait()

    asyncio.run(run())


if __name__ == "__main__":
    main(sys.argv[1:])
