"""Becoming a validator on chain: stake (approving the stake token first) and publish the
endpoint where receipts are served."""

from __future__ import annotations

from tessera.chain.client import Chain, tx_hash
from tessera.chain.tokens import StakeToken
from tessera.chain.validators import Validators
from tessera.errors import ChainError


def ensure_validator(chain: Chain, stake: int, endpoint: str | None) -> list[tuple[str, str]]:
    """Register with `stake` if not registered, top the stake up to `stake` if below it, and set
    the receipts endpoint if it differs. Returns (what, tx) for each transaction sent."""
    validators = Validators(chain)
    minimum = validators.min_stake()
    if stake < minimum:
        token = StakeToken(chain)
        raise ChainError(f"stake {token.format(stake)} is below the minimum {token.format(minimum)}")
    record = validators.record(chain.address)
    sent: list[tuple[str, str]] = []
    if record["registered_at"] == 0:
        sent.append(("registered", tx_hash(validators.register(stake))))
    elif record["stake"] < stake:
        sent.append(("stake-added", tx_hash(validators.add_stake(stake - record["stake"]))))
    if endpoint and endpoint != record["endpoint"]:
        sent.append(("endpoint-set", tx_hash(validators.set_endpoint(endpoint))))
    return sent
