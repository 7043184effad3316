"""The audit reads the home tokens' supply (explorer/audit_supply.py) on two real anvil nodes:
TUSD bridged in and out, and TUSD minted at home by a minter the home Timelock granted after its
delay. The audit agrees, splits the supply into what the TokenBridge minted (locked on the peer)
and what was minted outside the bridge, and the split follows the new minter's mint exactly."""

from __future__ import annotations

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain
from tessera.chain.token_bridge import TokenBridge
from tessera.chain.tokens import PaymentToken
from tessera.explorer.audit import audit

from .conftest import HOME, OTHER, PEER, SENDER, TUSD
from .test_bridge_explorer import index


def _tusd_supply(report):
    [s] = [s for s in report.bridge.supplies if s.token == "TUSD"]
    return s


def test_the_home_supply_is_split_by_who_minted_it(bridge, tmp_path):
    bridge.send(PEER, SENDER, 5 * TUSD)
    bridge.settle()
    bridge.send(HOME, SENDER, 2 * TUSD)
    bridge.settle()
    engine, _ = index(bridge, f"sqlite:///{tmp_path / 'a.db'}")
    first = audit(Chain(bridge.network), engine)
    assert first.agrees, first.problems
    before = _tusd_supply(first)
    backing = TokenBridge(bridge.chain(HOME)).backing(PEER)
    assert before.bridged == backing >= 3 * TUSD and before.problems == []
    assert before.supply == PaymentToken(bridge.chain(HOME)).total_supply()
    assert any("minted at home outside the bridge" in line for line in first.bridge.lines())

    minter = devnet_account(OTHER).address   # the owner grants a minter, after the delay
    bridge.owner_action(HOME, "PaymentToken", "set_minter", minter, True)
    PaymentToken(bridge.chain(HOME, OTHER))._send("mint", minter, 7 * TUSD)
    engine, _ = index(bridge, engine)
    after = audit(Chain(bridge.network), engine)
    assert after.agrees, after.problems
    now = _tusd_supply(after)
    assert now.bridged == before.bridged and now.outside_bridge == before.outside_bridge + 7 * TUSD
    assert now.outside_minted == before.outside_minted + 7 * TUSD
    assert now.supply == before.supply + 7 * TUSD
