"""Deploy Tessera's contracts to a chain and describe them in a Network."""

from __future__ import annotations

from dataclasses import dataclass

from eth_account.signers.local import LocalAccount
from web3 import Web3

from tessera.chain.compiler import compile_contract
from tessera.chain.network import Network

PAYMENT_DECIMALS = 6
STAKE_DECIMALS = 18


@dataclass(frozen=True)
class DeployParams:
    treasury: str
    min_stake: int = 100 * 10**STAKE_DECIMALS
    unbonding_period: int = 3600
    fee_bps: int = 250
    epoch_length: int = 60  # seconds per uptime epoch (docs/uptime.md)


def _deploy(w3: Web3, deployer: LocalAccount, name: str, *args) -> tuple[str, int]:
    artifact = compile_contract(name)
    factory = w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
    tx = factory.constructor(*args).build_transaction(
        {
            "from": deployer.address,
            "nonce": w3.eth.get_transaction_count(deployer.address, "pending"),
            "chainId": w3.eth.chain_id,
        }
    )
    tx_hash = w3.eth.send_raw_transaction(deployer.sign_transaction(tx).raw_transaction)
    receipt = w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60)
    if receipt["status"] != 1:
        raise RuntimeError(f"deploying {name} reverted (tx 0x{tx_hash.hex()})")
    return receipt["contractAddress"], receipt["blockNumber"]


def deploy_all(w3: Web3, deployer: LocalAccount, params: DeployParams, name: str) -> Network:
    stake, first_block = _deploy(w3, deployer, "StakeToken", "Tessera Stake", "TSTK",
                                 STAKE_DECIMALS, "Tessera Stake", "1")
    payment, _ = _deploy(w3, deployer, "PaymentToken", "Tessera USD", "TUSD",
                         PAYMENT_DECIMALS, "Tessera USD", "1")
    registry, _ = _deploy(w3, deployer, "ProviderRegistry", stake, params.min_stake,
                          params.unbonding_period)
    market, _ = _deploy(w3, deployer, "Market", payment, registry, params.treasury, params.fee_bps)
    uptime, _ = _deploy(w3, deployer, "Uptime", registry, params.epoch_length)
    return Network(
        name=name,
        chain_id=w3.eth.chain_id,
        rpc_url=w3.provider.endpoint_uri,  # type: ignore[attr-defined]
        contracts={"StakeToken": stake, "PaymentToken": payment,
                   "ProviderRegistry": registry, "Market": market, "Uptime": uptime},
        deploy_block=first_block,
    )
