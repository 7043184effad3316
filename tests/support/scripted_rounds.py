"""The provider's real HTTP app (`tessera.provider.api.create_app`, served by uvicorn) over a
scripted node that knows only DiLoCo rounds: which leases exist, when each round's signed
answer appears, and the pseudo-gradient behind it. For tests of the round routes (long polls
included) without a chain, a provider daemon or a training worker."""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

from tessera.chain.accounts import devnet_account
from tessera.errors import Refused
from tessera.protocol import messages
from tessera.protocol.wire import RoundResult

CHAIN_ID = 31337
MARKET = "0x" + "5a" * 20
PROVIDER, TENANT = devnet_account(2), devnet_account(5)
LEASES = range(1, 41)           # the DiLoCo leases the node runs; any other is unknown (404)
PARAMS = b"the round's global parameters"
PAYLOAD = b"a worker's pseudo-gradient" * 10


def signed_answer(lease_id: int, round_index: int) -> RoundResult:
    """The provider's signed answer to PARAMS with PAYLOAD."""
    params_sha, payload_sha = hashlib.sha256(PARAMS).digest(), hashlib.sha256(PAYLOAD).digest()
    typed = messages.round_result_typed_data(CHAIN_ID, MARKET, lease_id, round_index, params_sha,
                                             payload_sha)
    return RoundResult(lease_id=lease_id, round=round_index, params_sha256=params_sha.hex(),
                       sha256=payload_sha.hex(), size=len(PAYLOAD), inner_loss=1.0,
                       compute_s=0.5, signature=messages.sign(PROVIDER, typed))


class ScriptedNode:
    """What `create_app` asks a ProviderNode for on the round routes. `script[(lease, round)]`
    is called on every look-up: it returns the answer, None (still working) or raises Refused;
    `lookups` counts the look-ups."""

    def __init__(self, folder: Path):
        self.stop_event = threading.Event()
        self.script: dict[tuple[int, int], Callable[[], RoundResult | None]] = {}
        self.lookups = 0
        self.payload = folder / "pseudo_gradient.bin"
        self.payload.write_bytes(PAYLOAD)
        refused = SimpleNamespace(labels=lambda *_: SimpleNamespace(inc=lambda: None))
        self.ctx = SimpleNamespace(
            state=SimpleNamespace(lease=lambda lease_id: SimpleNamespace(
                tenant=TENANT.address, order_id=1) if lease_id in LEASES else None),
            metrics=SimpleNamespace(refused=refused),
            validators=SimpleNamespace(is_validator=lambda address: False),
            chain=SimpleNamespace(network=SimpleNamespace(chain_id=CHAIN_ID)),
            market=SimpleNamespace(address=MARKET))

    def reset(self) -> None:
        self.stop_event.clear()
        self.script.clear()
        self.lookups = 0

    def answer_at(self, lease_id: int, round_index: int, at: float) -> None:
        """The round's answer exists from monotonic time `at` on."""
        answer = signed_answer(lease_id, round_index)
        self.script[(lease_id, round_index)] = lambda: answer if time.monotonic() >= at else None

    def round_result(self, lease_id: int, round_index: int,
                     root: str | None = None) -> RoundResult | None:
        self.lookups += 1
        if lease_id not in LEASES:
            raise Refused(404, f"lease {lease_id} is unknown to this provider")
        step = self.script.get((lease_id, round_index))
        return step() if step else None

    def round_payload(self, lease_id: int, round_index: int) -> Path | None:
        """PAYLOAD once the round's answer exists (None before), as a provider serves it."""
        step = self.script.get((lease_id, round_index))
        return self.payload if step is not None and step() is not None else None


def tenant_side() -> SimpleNamespace:
    """What a WorkerChannel and ReadGrantAuth ask of a Tenant and its Chain."""
    chain = SimpleNamespace(account=TENANT, network=SimpleNamespace(chain_id=CHAIN_ID),
                            market=SimpleNamespace(address=MARKET))
    return SimpleNamespace(chain=chain, market=chain.market)
