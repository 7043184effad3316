"""Every contract compiles with plain vyper and an explicit FilesystemInputBundle."""

import pytest
import vyper
from contracts_support import CONTRACT_NAMES


def test_vyper_version_pinned():
    assert vyper.__version__.startswith("0.4.3")


@pytest.mark.parametrize("name", CONTRACT_NAMES)
def test_compiles_with_plain_vyper(name, vyper_compile):
    out = vyper_compile(name)
    assert out["bytecode"].startswith("0x") and len(out["bytecode"]) > 100
    names = {item.get("name") for item in out["abi"]}
    expected = {
        "PaymentToken": {"transferWithAuthorization", "receiveWithAuthorization",
                         "cancelAuthorization", "authorizationState", "permit", "mint"},
        "StakeToken": {"transfer", "permit", "mint", "set_minter"},
        "ProviderRegistry": {"register", "slash", "providers", "is_active", "provider_at"},
        "Market": {"create_order", "accept_bid", "bid_digest", "earned", "withdraw",
                   "close_lease", "orders", "leases", "claim_downtime"},
        "Uptime": {"heartbeat", "beats", "current_epoch", "epoch_length", "genesis", "Heartbeat",
                   "report_outage"},
        "Validators": {"register", "add_stake", "request_unbond", "withdraw_unbonded", "slash",
                       "is_validator", "validator_count", "validator_at", "stake_of"},
        "Probes": {"report", "reported", "receipt_digest", "current_epoch"},
        "Verification": {"post_root", "round_finalized", "open_challenge", "answer", "vote",
                         "resolve", "claim_reward"},
        "HardwareReports": {"report", "claim", "quorum", "report_count", "HardwareReported",
                            "HardwareSlashed"},
    }[name]
    assert expected <= names


def test_every_deployed_contract_is_tested_here():
    from tessera.chain.compiler import CONTRACT_NAMES as DEPLOYED

    assert set(DEPLOYED) == set(CONTRACT_NAMES)
