"""Becoming a validator on chain: stake (approving the stake token first) and publish the
endpoint where receipts are served."""

from __future__ import annotations

from tessera.chain.client import Chain, ChainError
from tessera.chain.market import STAKE_DECIMALS, STAKE_SYMBOL, InsufficientFunds, tx_hash
from tessera.protocol.money import format_amount


def _approve(chain: Chain, amount: int) -> None:
    token, spender = chain.stake_token, chain.validators.address
    have = chain.call(token.functions.balanceOf(chain.address))
    if have < amount:
        raise InsufficientFunds(
            f"not enough {STAKE_SYMBOL} to stake: {chain.address} holds "
            f"{format_amount(have, STAKE_DECIMALS, STAKE_SYMBOL)}, needs "
            f"{format_amount(amount, STAKE_DECIMALS, STAKE_SYMBOL)}")
    if chain.call(token.functions.allowance(chain.address, spender)) < amount:
        chain.send(token.functions.approve(spender, amount))


def ensure_validator(chain: Chain, stake: int, endpoint: str | None) -> list[tuple[str, str]]:
    """Register with `stake` if not registered, top the stake up to `stake` if below it, and set
    the receipts endpoint if it differs. Returns (what, tx) for each transaction sent."""
    validators = chain.validators
    minimum = chain.call(validators.functions.min_stake())
    if stake < minimum:
        raise ChainError(f"stake {format_amount(stake, STAKE_DECIMALS, STAKE_SYMBOL)} is below the "
                         f"minimum {format_amount(minimum, STAKE_DECIMALS, STAKE_SYMBOL)}")
    record = chain.call(validators.functions.validators(chain.address))
    # (stake, unbonding, unbond_release, registered_at, slashed_total, endpoint)
    current_stake, registered_at, current_endpoint = record[0], record[3], record[5]
    sent: list[tuple[str, str]] = []
    if registered_at == 0:
        _approve(chain, stake)
        sent.append(("registered", tx_hash(chain.send(validators.functions.register(stake)))))
    elif current_stake < stake:
        _approve(chain, stake - current_stake)
        sent.append(("stake-added",
                     tx_hash(chain.send(validators.functions.add_stake(stake - current_stake)))))
    if endpoint and endpoint != current_endpoint:
        sent.append(("endpoint-set", tx_hash(chain.send(validators.functions.set_endpoint(endpoint)))))
    return sent
