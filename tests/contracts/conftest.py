"""Fixtures for the in-process (titanoboa) contract tests.

`compile_vyper` is the reference compile call: plain `vyper.compiler.compile_from_file_input`
with an explicit `FilesystemInputBundle` over [src/tessera/contracts, site-packages (snekmate)].
titanoboa's pytest plugin wraps every fixture and test in `boa.env.anchor()`, so the
session-scoped deployment below is rolled back after each test.
"""

from __future__ import annotations

import functools

import boa
import pytest
from contracts_support import (
    CLAIM_WINDOW,
    CONTRACT_NAMES,
    CONTRACTS_DIR,
    DOWNTIME_SLASH,
    FEE_BPS,
    MIN_STAKE,
    PAYMENT_DECIMALS,
    STAKE_DECIMALS,
    TSTK,
    UNBONDING_PERIOD,
    USD,
    System,
    key_account,
    snekmate_search_root,
    uptime_args,
)
from vyper.compiler import compile_from_file_input
from vyper.compiler.input_bundle import FilesystemInputBundle


@functools.cache
def compile_vyper(name: str, output_formats=("abi", "bytecode", "bytecode_runtime")) -> dict:
    """Compile `src/tessera/contracts/<name>.vy` exactly as the lead's wrapper should (once per
    name in a test run: a compile of the larger contracts takes seconds)."""
    bundle = FilesystemInputBundle([CONTRACTS_DIR, snekmate_search_root()])
    file_input = bundle.load_file(CONTRACTS_DIR / f"{name}.vy")
    return compile_from_file_input(
        file_input, input_bundle=bundle, output_formats=list(output_formats)
    )


@pytest.fixture(autouse=True)
def _no_storage_record_from_earlier_tests():
    """titanoboa records the storage slots written at each address, for the storage dump it
    makes of a contract that reverts; an anchor rolls the chain back but not that record. A
    contract deployed later at a reused address (another test's AgentBudget, with its nested
    maps) was then dumped with the other contract's slots, and the dump itself crashed
    (AttributeError in boa's StorageVar.get) instead of the expected revert. The record only
    feeds that debug dump: each test starts without the earlier tests' entries."""
    boa.env.sstore_trace.clear()
    yield


@pytest.fixture(scope="session")
def factories():
    boa.interpret.set_search_paths([str(CONTRACTS_DIR), str(snekmate_search_root())])
    return {name: boa.load_partial(str(CONTRACTS_DIR / f"{name}.vy")) for name in CONTRACT_NAMES}


@pytest.fixture(scope="session")
def system(factories) -> System:
    owner = boa.env.eoa
    treasury = boa.env.generate_address("treasury")
    slasher = boa.env.generate_address("slasher")
    outsider = key_account(99)
    tenant, tenant2 = key_account(1), key_account(2)
    providers = [key_account(10 + i) for i in range(4)]

    usd = factories["PaymentToken"].deploy("Tessera USD", "TUSD", PAYMENT_DECIMALS,
                                           "Tessera USD", "1")
    stake = factories["StakeToken"].deploy("Tessera Stake", "TSTK", STAKE_DECIMALS,
                                           "Tessera Stake", "1")
    registry = factories["ProviderRegistry"].deploy(stake.address, MIN_STAKE, UNBONDING_PERIOD)
    validators = factories["Validators"].deploy(stake.address, MIN_STAKE, UNBONDING_PERIOD)
    uptime = factories["Uptime"].deploy(*uptime_args(registry.address, validators.address))
    validators.set_slasher(uptime.address, True)
    market = factories["Market"].deploy(usd.address, registry.address, uptime.address, treasury,
                                        FEE_BPS, DOWNTIME_SLASH, CLAIM_WINDOW)
    registry.set_slasher(slasher, True)
    registry.set_slasher(uptime.address, True)
    registry.set_slasher(market.address, True)

    for who in (tenant, tenant2, outsider):
        usd.mint(who.address, 1_000_000 * USD)
        with boa.env.prank(who.address):
            usd.approve(market.address, 2**256 - 1)
    # provider 0: 8x H100 80GB, floor 1 USD; 1: 4x A100 40GB, floor 0.5; 2: 1x RTX4090 24GB
    offers = [("H100", 8, 81920, 1 * USD), ("A100", 4, 40960, USD // 2),
              ("RTX4090", 1, 24576, USD // 10), ("H100", 8, 81920, 1 * USD)]
    for acct, (model, count, mem, floor) in zip(providers, offers, strict=True):
        stake.mint(acct.address, 1_000 * TSTK)
        with boa.env.prank(acct.address):
            stake.approve(registry.address, 2**256 - 1)
            registry.register(MIN_STAKE, model, count, mem, 1000, f"https://{model}.example", floor)
    stake.mint(outsider.address, 1_000 * TSTK)
    with boa.env.prank(outsider.address):
        stake.approve(registry.address, 2**256 - 1)
    return System(owner, treasury, slasher, outsider, tenant, tenant2, providers,
                  usd, stake, registry, market, uptime, validators=validators)


@pytest.fixture(scope="session")
def vyper_compile():
    """The `compile_vyper` helper, for tests (do not import conftest by name)."""
    return compile_vyper


@pytest.fixture(scope="session")
def partials(factories):  # `factories` has set the search paths (snekmate)
    return {name: boa.load_partial(str(CONTRACTS_DIR / f"{name}.vy"))
            for name in ("Validators", "Verification", "Settlement")}
