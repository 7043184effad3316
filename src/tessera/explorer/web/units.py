"""What unit each number is in: event args by contract and event, and figures by name.

Amounts on chain are integers in a token's base units; a page shows them with `show_amount` (at
most 6 decimals, '≈' when rounded) and the exact `format_amount` in a tooltip; the JSON API keeps
base units and names the token. Times are Unix seconds, shown with `format_time`.
"""

from __future__ import annotations

from tessera.protocol.figures import figure_unit  # noqa: F401  (re-exported for the pages)
from tessera.protocol.money import PAYMENT_DECIMALS, PAYMENT_SYMBOL, STAKE_DECIMALS, STAKE_SYMBOL

TUSD, TSTK, ETH = PAYMENT_SYMBOL, STAKE_SYMBOL, "ETH"
DECIMALS = {TUSD: PAYMENT_DECIMALS, TSTK: STAKE_DECIMALS, ETH: 18}

# Arguments that are token amounts, per contract; every other contract's events name none.
# Stake weights (a vote's weight, a quorum) are stake-token amounts too.
_TUSD_MARKET = {"deposit", "refund", "price_per_gpu_hour", "max_price_per_gpu_hour", "budget", "amount",
                "amount_to_provider", "fee", "provider_amount", "overdrawn"}
_STAKE = {"stake", "amount", "total_stake", "unbonding_total"}
_VERIFICATION = {"bond", "quorum", "weight", "slashed", "to_challenger", "to_tenant", "to_voters", "burned",
                 "bond_to_provider", "bond_returned", "amount"}
_HARDWARE = {"weight", "reported", "quorum", "jury_quorum", "pass_stake", "fail_stake", "slashed",
             "reward_pool", "burned", "amount"}
AMOUNT_ARGS: dict[str, dict[str, str]] = {
    "Market": {**dict.fromkeys(_TUSD_MARKET, TUSD), "stake_slashed": TSTK},
    "Settlement": dict.fromkeys(("amount", "withheld", "refund"), TUSD),
    "ProviderRegistry": {**dict.fromkeys(_STAKE, TSTK), "price_floor": TUSD},
    "Validators": dict.fromkeys(_STAKE, TSTK),
    "Verification": dict.fromkeys(_VERIFICATION, TSTK),
    "HardwareReports": dict.fromkeys(_HARDWARE, TSTK),
    "PaymentToken": {"value": TUSD},
    "StakeToken": {"value": TSTK},
    "Timelock": {"amount": ETH},
    "AgentBudget": dict.fromkeys(("amount", "budget", "cap"), TUSD),
    "Uptime": dict.fromkeys(("challenge_bond", "inclusion_slash", "bond", "to_answerer", "slashed",
                             "to_challenger", "burned", "bond_returned"), TSTK),
}
# Arguments that are block times (Unix seconds), and durations (seconds).
TIME_ARGS = {"start", "deadline", "release_at", "locked_until", "until", "jailed_until", "released_until",
             "dispute_deadline", "vote_deadline", "genesis", "expiry"}
DURATION_ARGS = {"duration", "epoch_length", "jail_period", "delay", "old_duration", "new_duration",
                 "period"}
BPS_ARGS = {"fee_bps", "old_fee_bps", "new_fee_bps"}
# Address arguments that name a provider or a validator (linked to their pages).
PROVIDER_ARGS = {"provider"}
VALIDATOR_ARGS = {"validator", "voter"}


def arg_unit(contract: str, event: str, name: str) -> str | None:
    """'TUSD', 'TSTK', 'ETH', 'time', 'seconds', 'bps' or None (a count, id, hash or address)."""
    token = AMOUNT_ARGS.get(contract, {}).get(name)
    if token is not None:
        return token
    if name in TIME_ARGS:
        return "time"
    if name in DURATION_ARGS:
        return "seconds"
    if name in BPS_ARGS:
        return "bps"
    return None
