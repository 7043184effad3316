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
                   "close_lease", "orders", "leases"},
        "Uptime": {"heartbeat", "beats", "current_epoch", "epoch_length", "genesis", "Heartbeat"},
    }[name]
    assert expected <= names
