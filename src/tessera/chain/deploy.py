"""Deploy Tessera's contracts to a chain and describe them in a Network."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

from eth_account.signers.local import LocalAccount
from web3 import Web3

from tessera.chain.compiler import compile_contract
from tessera.chain.hardware import HardwareReportsParams
from tessera.chain.network import Network
from tessera.chain.verification import VerificationParams
from tessera.protocol import liveness
from tessera.protocol.money import PAYMENT_DECIMALS, PAYMENT_SYMBOL, STAKE_DECIMALS, STAKE_SYMBOL

# Told one line after each confirmed transaction of a deploy (None: told nothing).
Progress = Callable[[str], None] | None


@dataclass(frozen=True)
class DeployParams:
    treasury: str
    min_stake: int = 100 * 10**STAKE_DECIMALS
    unbonding_period: int = 3600
    fee_bps: int = 250
    epoch_length: int = 60  # seconds per uptime epoch (docs/uptime.md)
    jail_after: int = 10  # consecutive epochs without a heartbeat that anyone may report
    jail_period: int = 86_400  # seconds a reported outage jails the provider
    downtime_slash: int = 1 * 10**STAKE_DECIMALS  # stake burned per claimed missed epoch
    claim_window: int = 86_400  # seconds after a lease closes during which downtime is claimable
    validator_min_stake: int = 100 * 10**STAKE_DECIMALS  # docs/validators.md
    probe_report_delay: int = 32  # epochs a validator has to post a probe report
    # Liveness reports (docs/uptime.md): reports of an epoch are accepted for this many epochs
    # after it; a challenge opened at the last moment has `liveness_answer_epochs` to be
    # answered; an epoch is final (downtime claimable, outages reportable) after both.
    liveness_report_delay: int = 1
    liveness_answer_epochs: int = 1
    liveness_challenge_bond: int = 10 * 10**STAKE_DECIMALS  # a challenger's bond (stake token)
    liveness_inclusion_slash: int = 50 * 10**STAKE_DECIMALS  # a validator's unanswered inclusion
    # The target chain's block gas limit and block time (milliseconds), when known (`tessera
    # network deploy` reads them, or is told): the answer window must then hold a validator's
    # answers to a challenge naming a whole report of the largest size
    # (protocol.liveness.answer_epochs_for; docs/uptime.md, "The answer window"). None (the
    # devnet: anvil mines at once): unchecked.
    chain_block_gas: int | None = None
    chain_block_ms: int | None = None
    verification: VerificationParams = field(default_factory=VerificationParams)  # docs/verification.md
    hardware: HardwareReportsParams = field(default_factory=HardwareReportsParams)  # docs/hardware.md
    # Seconds after Verification's challenge window before pay for time no root covers is
    # released anyway (docs/verification.md, "Market: pay waits for verified rounds").
    root_grace: int = 3_600
    # Seconds between scheduling and executing an owner action on the ProviderRegistry, the
    # Validators, the Market or the StakeToken (a slasher grant, a fee, a mint): their owner is
    # the Timelock (docs/contracts.md, "Owner powers"). Devnet tests may pass a short one.
    timelock_delay: int = 2 * 86_400
    # The stake token's whole supply, minted once to the deployer at deploy (it funds validators
    # and providers from it); the mint role then goes to the Timelock with the ownership, so
    # that nobody can mint stake (and outvote a stake-weighted quorum) without a public delay.
    stake_supply: int = 10**9 * 10**STAKE_DECIMALS

    def __post_init__(self) -> None:
        # After a lease closes the Market keeps the provider's stake locked for claim_window
        # (ProviderRegistry.release_hold). A verified lease's last rounds can still get a root
        # (root_grace) and be challenged (challenge_window) and voted on (vote_period) after
        # the close: the lock must outlast that, or a cheater unbonds out of its slash.
        # A lease's last epochs are final (claimable) report_delay + 1 + answer_epochs epochs
        # after they end: the claim window must reach that far past the close.
        settle = (self.liveness_report_delay + self.liveness_answer_epochs + 2) * self.epoch_length
        if self.claim_window < settle:
            raise ValueError(
                f"claim_window ({self.claim_window} s) must be at least (liveness_report_delay + "
                f"liveness_answer_epochs + 2) epochs ({settle} s): a closed lease's last epochs "
                "turn final only then")
        # A validator may request unbonding right after reporting: its stake must still be
        # there when a challenge of that report can be resolved (Uptime's constructor refuses
        # less: the challenge does not lock it).
        if self.unbonding_period < self.liveness_unbonding_floor(self.epoch_length):
            raise ValueError(
                f"unbonding_period ({self.unbonding_period} s) must be at least "
                f"(liveness_report_delay + liveness_answer_epochs + 3) epochs: a validator "
                "could withdraw before a challenge of its liveness report is resolved")
        if (self.chain_block_gas is None) != (self.chain_block_ms is None):
            raise ValueError("chain_block_gas and chain_block_ms go together (both or neither)")
        if self.chain_block_gas is not None:
            self._check_answer_window()
        v = self.verification
        late = v.challenge_window + self.root_grace + v.vote_period
        if self.claim_window < late:
            raise ValueError(
                f"claim_window ({self.claim_window} s) must be at least challenge_window + "
                f"root_grace + vote_period ({late} s): the provider's stake is locked for "
                "claim_window after a close, and a late challenge must still find it")


    def _check_answer_window(self) -> None:
        need = liveness.answer_epochs_for(self.epoch_length, self.chain_block_gas,
                                          self.chain_block_ms)
        chain = f"a chain of {self.chain_block_gas:,}-gas blocks every {self.chain_block_ms} ms"
        if need > liveness.MAX_ANSWER_EPOCHS:
            shortest = -(-liveness.answer_epochs_for(1, self.chain_block_gas, self.chain_block_ms)
                         // liveness.MAX_ANSWER_EPOCHS)
            raise ValueError(
                f"uptime epochs of {self.epoch_length} s are too short for {chain}: answering a "
                f"challenge of a whole report needs {need} answer epochs, and Uptime takes at "
                f"most {liveness.MAX_ANSWER_EPOCHS}; use epochs of at least {shortest} s")
        if self.liveness_answer_epochs < need:
            raise ValueError(
                f"liveness_answer_epochs ({self.liveness_answer_epochs}) must be at least {need} "
                f"on {chain} with {self.epoch_length} s epochs: a challenge naming a whole "
                "report in the last block of its window must be answerable in time "
                "(protocol.liveness.answer_epochs_for)")

    def liveness_unbonding_floor(self, epoch_length: int) -> int:
        """The shortest unbonding period Uptime takes with these windows (its constructor's
        check): a challenge is resolved from epoch e + report_delay + answer_epochs + 2 on."""
        return (self.liveness_report_delay + self.liveness_answer_epochs + 3) * epoch_length

    def with_epoch(self, epoch_length: int, chain: tuple[int, int] | None = None) -> DeployParams:
        """These parameters with another uptime epoch (and, when given, the chain's block gas
        limit and block time in ms), the answer epochs, the claim window and the unbonding
        period raised (never lowered) to what they need (the checks above)."""
        block_gas, block_ms = chain or (self.chain_block_gas, self.chain_block_ms)
        answer = self.liveness_answer_epochs
        if block_gas is not None and block_ms is not None:
            answer = max(answer, min(liveness.answer_epochs_for(epoch_length, block_gas, block_ms),
                                     liveness.MAX_ANSWER_EPOCHS + 1))   # past it: refused
        settle = (self.liveness_report_delay + answer + 2) * epoch_length
        unbonding = (self.liveness_report_delay + answer + 3) * epoch_length   # the floor
        return replace(self, epoch_length=epoch_length, chain_block_gas=block_gas,
                       chain_block_ms=block_ms, liveness_answer_epochs=answer,
                       claim_window=max(self.claim_window, settle),
                       unbonding_period=max(self.unbonding_period, unbonding))


def deploy_contract(w3: Web3, deployer: LocalAccount, name: str, *args) -> tuple[str, int]:
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


def owner_call(w3: Web3, deployer: LocalAccount, name: str, address: str, fn: str, *args) -> None:
    """The deployer owns contract `name` at `address`: call its owner-only `fn`."""
    contract = w3.eth.contract(address=address, abi=compile_contract(name).abi)
    tx = getattr(contract.functions, fn)(*args).build_transaction(
        {"from": deployer.address, "chainId": w3.eth.chain_id,
         "nonce": w3.eth.get_transaction_count(deployer.address, "pending")})
    tx_hash = w3.eth.send_raw_transaction(deployer.sign_transaction(tx).raw_transaction)
    if w3.eth.wait_for_transaction_receipt(tx_hash, timeout=60)["status"] != 1:
        raise RuntimeError(f"{name}.{fn}{args} reverted (tx 0x{tx_hash.hex()})")


def _grant_slasher(w3: Web3, deployer: LocalAccount, registry: str, slasher: str,
                   progress: Progress) -> None:
    """The deployer owns the registry: let `slasher` (a contract) slash and jail providers."""
    _owner_step(w3, deployer, "ProviderRegistry", registry, "set_slasher", progress, slasher, True)


def _deploy_step(w3: Web3, deployer: LocalAccount, name: str, progress: Progress,
                 *args) -> tuple[str, int]:
    address, block = deploy_contract(w3, deployer, name, *args)
    if progress is not None:
        progress(f"deployed {name} at {address}")
    return address, block


def _owner_step(w3: Web3, deployer: LocalAccount, name: str, address: str, fn: str,
                progress: Progress, *args) -> None:
    owner_call(w3, deployer, name, address, fn, *args)
    if progress is not None:
        progress(f"{name}.{fn}({', '.join(map(str, args))})")


def deploy_timelock(w3: Web3, deployer: LocalAccount, delay: int,
                    progress: Progress = None) -> str:
    """A Timelock with minimum delay `delay`: the deployer proposes, cancels and executes; the
    timelock administers itself (no admin), so a role or delay change waits the delay too.
    The home chain's (below) and each bridge peer's (chain/bridge_deploy.py) are made here."""
    timelock, _ = _deploy_step(w3, deployer, "Timelock", progress, delay, [deployer.address],
                               [deployer.address], "0x" + "00" * 20)
    return timelock


HOME_TIMELOCKED = ("ProviderRegistry", "Validators", "Market", "StakeToken")


def hand_home_to_timelock(w3: Web3, deployer: LocalAccount, network: Network,
                          progress: Progress = None, payment: bool = False) -> None:
    """Make the network's Timelock the owner of the ProviderRegistry, the Validators, the Market
    and the StakeToken (its mint role moves with the ownership), after every deploy-time role
    grant and setting: from now on a slasher grant, a fee or treasury change, or a stake mint
    waits the Timelock's delay, in the open (CallScheduled). `payment`: the PaymentToken too (a
    devnet whose TUSD is bridged: the deployer's mint would be TUSD with no lock behind it;
    a one-chain devnet keeps minting its stand-in stablecoin at will)."""
    timelock = network.address("Timelock")
    for name in HOME_TIMELOCKED + (("PaymentToken",) if payment else ()):
        _owner_step(w3, deployer, name, network.address(name), "transfer_ownership", progress,
                    timelock)


def deploy_all(w3: Web3, deployer: LocalAccount, params: DeployParams, name: str,
               progress: Progress = None, hand_over: bool = True) -> Network:
    """Deploy every contract (the compiler's CONTRACT_NAMES), wire them, mint the stake supply to
    the deployer and hand the owner powers to the Timelock (the deployer proposes, cancels and
    executes; the timelock administers itself). `progress`, if given, is called with one line
    after each confirmed transaction (`tessera network deploy` prints them). `hand_over=False`
    leaves the owner powers with the deployer, who must call `hand_home_to_timelock` once it has
    made its last deploy-time grant (the devnet's bridge makes its StakeBridge a stake minter)."""
    def deploy(contract: str, *args) -> tuple[str, int]:
        return _deploy_step(w3, deployer, contract, progress, *args)

    def own(contract: str, address: str, fn: str, *args) -> None:
        _owner_step(w3, deployer, contract, address, fn, progress, *args)

    stake, first_block = deploy("StakeToken", "Tessera Stake", STAKE_SYMBOL, STAKE_DECIMALS,
                                "Tessera Stake", "1")
    payment, _ = deploy("PaymentToken", "Tessera USD", PAYMENT_SYMBOL, PAYMENT_DECIMALS,
                        "Tessera USD", "1")
    registry, _ = deploy("ProviderRegistry", stake, params.min_stake, params.unbonding_period)
    validators, _ = deploy("Validators", stake, params.validator_min_stake,
                           params.unbonding_period)
    uptime, _ = deploy("Uptime", registry, validators, params.epoch_length, params.jail_after,
                       params.jail_period, params.liveness_report_delay,
                       params.liveness_answer_epochs, params.liveness_challenge_bond,
                       params.liveness_inclusion_slash)
    market, _ = deploy("Market", payment, registry, uptime, params.treasury, params.fee_bps,
                       params.downtime_slash, params.claim_window)
    _grant_slasher(w3, deployer, registry, uptime, progress)  # jails after a reported outage
    _grant_slasher(w3, deployer, registry, market, progress)  # slashes per claimed missed epoch
    # slashes a validator whose challenged liveness report is unanswered (and locks it meanwhile)
    own("Validators", validators, "set_slasher", uptime, True)
    probes, _ = deploy("Probes", validators, uptime, params.probe_report_delay)
    verification, _ = deploy("Verification", market, registry, validators,
                             *params.verification.constructor_args())
    _grant_slasher(w3, deployer, registry, verification, progress)
    # Verification locks voters' stake until their verdict can be carried out
    own("Validators", validators, "set_slasher", verification, True)
    hardware, _ = deploy("HardwareReports", uptime, validators,
                         *params.hardware.constructor_args())
    _grant_slasher(w3, deployer, registry, hardware, progress)  # slashes on a quorum of failed challenges
    # ... and locks the reporters' and jurors' stake until the round is decided
    own("Validators", validators, "set_slasher", hardware, True)
    # Verified orders' pay waits for its rounds: Settlement walks them (set once in the Market).
    settlement, _ = deploy("Settlement", market, verification, params.root_grace)
    own("Market", market, "set_settlement", settlement)
    own("StakeToken", stake, "mint", deployer.address, params.stake_supply)
    # Agents' budgets: no owner powers at all (docs/contracts.md, "AgentBudget").
    agent_budget, _ = deploy("AgentBudget", payment, registry, "Tessera AgentBudget", "1")
    timelock = deploy_timelock(w3, deployer, params.timelock_delay, progress)
    network = Network(
        name=name,
        chain_id=w3.eth.chain_id,
        rpc_url=w3.provider.endpoint_uri,  # type: ignore[attr-defined]
        contracts={"StakeToken": stake, "PaymentToken": payment,
                   "ProviderRegistry": registry, "Market": market, "Uptime": uptime,
                   "Validators": validators, "Probes": probes, "Verification": verification,
                   "Settlement": settlement, "HardwareReports": hardware, "Timelock": timelock,
                   "AgentBudget": agent_budget},
        deploy_block=first_block,
    )
    if hand_over:
        hand_home_to_timelock(w3, deployer, network, progress)
    return network
