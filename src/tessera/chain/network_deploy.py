"""`tessera network deploy`: Tessera's contracts onto any EVM chain reached by its RPC URL, into a
network file that every command then takes with `--network` (docs/scale.md, "Beyond one
machine"). It runs `deploy_all` as `tessera devnet up` does, and nothing else: no anvil, no
minted or funded test accounts.

Every check runs before the first transaction, and a refused deploy changes nothing (no file, no
transaction): an RPC that does not answer, an out file that exists (unless replaced on purpose,
and then only a network file of the same chain without peers), a deployer without the gas the
deploy is estimated to need, and anvil's published test keys anywhere but a devnet chain (the
deployer keeps the whole stake supply and the Timelock's proposer role: a public key would hand
both to anyone). The network file is written atomically once every contract is in place."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests
from eth_account.signers.local import LocalAccount
from web3 import Web3

from tessera.chain.accounts import DEVNET_ACCOUNT_COUNT, devnet_account, resolve_account
from tessera.chain.compiler import CONTRACT_NAMES, compile_contract
from tessera.chain.deploy import DeployParams, deploy_all
from tessera.chain.devnet import DEVNET_CHAIN_ID, PEER_CHAIN_ID
from tessera.chain.network import Network, load_network, save_network
from tessera.errors import AccountError, ChainError, NetworkError
from tessera.protocol.money import STAKE_DECIMALS, STAKE_SYMBOL, format_duration, show_amount

# The role grants, the stake mint and the hand-over to the Timelock that follow the contracts'
# creations: 13 calls of 28k to 71k gas each on anvil. The test compares the whole estimate
# with the gas a real deploy used.
OWNER_CALLS_GAS = 1_000_000
GWEI = 10**9
BLOCK_TIME_SAMPLE = 64   # blocks whose mean time sizes the answer window (chain_blocks)
MAX_PLAUSIBLE_BLOCK_GAS = 500_000_000   # a header's gas limit above this is not believed


@dataclass(frozen=True)
class DeployPlan:
    """What a deploy will do, read from the chain before anything is sent."""

    rpc_url: str
    chain_id: int
    deployer: LocalAccount
    balance: int        # the deployer's gas coin, in wei
    gas: int            # the estimated gas of every transaction together
    gas_price: int      # wei per gas, as the node quotes it now
    params: DeployParams
    name: str
    out: Path
    replaces: bool      # `out` holds an earlier deploy to this chain, replaced (--force)

    @property
    def cost(self) -> int:
        return self.gas * self.gas_price

    def describe(self) -> list[str]:
        """The lines a person reads before confirming."""
        p = self.params
        return [
            f"chain {self.chain_id} at {self.rpc_url}",
            f"deployer {self.deployer.address}: holds {_eth(self.balance)}",
            f"deploys {len(CONTRACT_NAMES)} contracts ({', '.join(CONTRACT_NAMES)}), then grants "
            "their roles, mints the whole stake supply to the deployer and hands the owner "
            "powers to the Timelock",
            f"estimated gas: about {self.gas:,} (at {self.gas_price / GWEI:,.3f} gwei: "
            f"{_eth(self.cost)}; a rollup's L1 data fee comes on top)",
            f"uptime epoch {format_duration(p.epoch_length)}, answer window "
            f"{p.liveness_answer_epochs} epoch(s) (sized to {p.chain_block_gas or 0:,}-gas blocks "
            f"every {(p.chain_block_ms or 0) / 1000:g} s: a challenge of a whole liveness report "
            "stays answerable), claim window "
            f"{format_duration(p.claim_window)}, unbonding {format_duration(p.unbonding_period)}, "
            f"timelock delay {format_duration(p.timelock_delay)}",
            f"treasury (receives the market's fee) {p.treasury}",
            f"network file {self.out} (name {self.name!r})"
            + (": replaces the earlier deploy it describes" if self.replaces else ""),
        ]


def creation_gas(bytecode: str) -> int:
    """Gas to create a contract from its init code: the transaction and CREATE (53,000), the
    init code as calldata (EIP-2028) and its words (EIP-3860), and the code deposit (200 per
    byte) counted on the whole init code, which slightly outweighs the constructors' writes."""
    code = bytes.fromhex(bytecode.removeprefix("0x"))
    zeros = code.count(0)
    return (53_000 + 4 * zeros + 16 * (len(code) - zeros) + 2 * ((len(code) + 31) // 32)
            + 200 * len(code))


def estimate_gas() -> int:
    """Every transaction of `deploy_all`, estimated without the chain (the constructors' arguments
    name contracts that do not exist yet, so the node cannot estimate them)."""
    return sum(creation_gas(compile_contract(n).bytecode) for n in CONTRACT_NAMES) + OWNER_CALLS_GAS


def plan_deploy(rpc_url: str, account: str, out: Path, *, name: str, epoch_seconds: int,
                treasury: str | None, force: bool,
                ask_password: Callable[[], str] | None = None, timeout: float = 10,
                block_gas_limit: int | None = None,
                block_seconds: float | None = None) -> DeployPlan:
    """Check everything a deploy needs and say what it will do; sends nothing. The local checks
    (URL, out file, key) come first, then the chain's."""
    if not rpc_url.startswith(("http://", "https://")):
        raise ChainError(f"--rpc-url {rpc_url!r} must be an http:// or https:// URL")
    out = Path(out)
    if out.exists() and not force:
        raise NetworkError(f"{out} already exists: choose another --out, or pass --force to "
                           "replace an earlier deploy to the same chain")
    _check_writable(out)
    if epoch_seconds < 1:
        raise ValueError(f"--epoch-seconds must be at least 1, not {epoch_seconds}")
    password = ask_password() if ask_password and account.strip().startswith("keystore:") else None
    deployer = resolve_account(account, password)
    w3 = Web3(Web3.HTTPProvider(rpc_url, request_kwargs={"timeout": timeout}))
    chain_id = _read(rpc_url, "chain id", lambda: w3.eth.chain_id)
    params = DeployParams(treasury=_treasury(treasury, deployer)).with_epoch(
        epoch_seconds, chain_blocks(w3, rpc_url, block_gas_limit, block_seconds))
    _check_key(deployer, chain_id)
    replaces = out.exists() and _check_replaceable(out, chain_id)
    balance = _read(rpc_url, "balance", lambda: w3.eth.get_balance(deployer.address))
    gas_price = _read(rpc_url, "gas price", lambda: w3.eth.gas_price)
    plan = DeployPlan(rpc_url=rpc_url, chain_id=chain_id, deployer=deployer, balance=balance,
                      gas=estimate_gas(), gas_price=gas_price, params=params, name=name,
                      out=out, replaces=replaces)
    if balance == 0:
        raise ChainError(f"the deployer {deployer.address} holds no gas coin on chain {chain_id}: "
                         "fund it (the test network's faucet) and run again")
    if balance < plan.cost:
        raise ChainError(
            f"the deployer {deployer.address} holds {_eth(balance)}, less than the deploy's "
            f"estimated {_eth(plan.cost)} ({plan.gas:,} gas at {gas_price / GWEI:,.3f} gwei): "
            "a deploy that runs dry halfway leaves contracts nobody uses; fund it and run again")
    return plan


def deploy_network(rpc_url: str, account: str, out: Path, *, name: str | None, epoch_seconds: int,
                   treasury: str | None, force: bool, yes: bool, say: Callable[[str], None],
                   confirm: Callable[[str], bool],
                   ask_password: Callable[[], str] | None = None,
                   block_gas_limit: int | None = None,
                   block_seconds: float | None = None) -> Network | None:
    """The whole command: plan, show, ask (unless `yes`), deploy with a line per transaction,
    write the file, show who owns what. None when the person declined (nothing was sent)."""
    out = Path(out)
    plan = plan_deploy(rpc_url, account, out, name=name or out.stem, epoch_seconds=epoch_seconds,
                       treasury=treasury, force=force, ask_password=ask_password,
                       block_gas_limit=block_gas_limit, block_seconds=block_seconds)
    for line in plan.describe():
        say(line)
    if not yes and not confirm(f"deploy to chain {plan.chain_id}?"):
        say("not deployed: nothing was sent")
        return None
    count = 0

    def progress(line: str) -> None:
        nonlocal count
        count += 1
        say(f"  [{count}] {line}")

    network = execute(plan, progress)
    say(f"network file written: {plan.out} (deploy block {network.deploy_block})")
    try:
        for line in ownership(network, plan):
            say(line)
    except ChainError as exc:      # the deploy stands: only the read-back failed
        say(f"(the owners could not be read back: {exc})")
    say(f"next: send providers and validators their {STAKE_SYMBOL} (StakeToken.transfer from the "
        "deployer; no tessera command sends tokens), then every command takes "
        f"--network {plan.out}")
    return network


def execute(plan: DeployPlan, progress: Callable[[str], None]) -> Network:
    """Deploy, then write the network file (atomically, deploy_block set). A failure halfway
    writes nothing and says so: the contracts already deployed are abandoned."""
    w3 = Web3(Web3.HTTPProvider(plan.rpc_url, request_kwargs={"timeout": 60}))
    steps = []

    def step(line: str) -> None:
        steps.append(line)
        progress(line)

    try:
        network = deploy_all(w3, plan.deployer, plan.params, name=plan.name, progress=step)
    except Exception as exc:
        raise ChainError(
            f"the deploy stopped after {len(steps)} transactions: {type(exc).__name__}: {exc}. "
            f"Nothing was written to {plan.out}; the contracts deployed so far are abandoned "
            "(run the command again for a fresh set)") from None
    try:
        if plan.out.exists() and not plan.replaces:
            raise FileExistsError(f"{plan.out} appeared while deploying; it was left alone")
        save_network(network, plan.out)
    except OSError as exc:
        raise NetworkError(f"every contract is deployed but {plan.out} could not be written "
                           f"({exc.strerror or exc}); the network file is:\n"
                           + network.model_dump_json(indent=2, exclude={"peers"})) from None
    return network


def ownership(network: Network, plan: DeployPlan) -> list[str]:
    """Who holds which power on the deployed contracts, read back from the chain: the owner of
    every contract that has one, and the deployer's stake."""
    w3 = Web3(Web3.HTTPProvider(plan.rpc_url, request_kwargs={"timeout": 10}))
    names = {address: name for name, address in network.contracts.items()}
    names[plan.deployer.address] = "the deployer"
    lines = []
    for contract, address in network.contracts.items():
        abi = compile_contract(contract).abi
        if not any(e.get("name") == "owner" and not e.get("inputs") for e in abi):
            continue
        owner = _read(plan.rpc_url, "owner", w3.eth.contract(address=address, abi=abi)
                      .functions.owner().call)
        lines.append(f"{contract} is owned by {names.get(owner, owner)}")
    stake = w3.eth.contract(address=network.address("StakeToken"),
                            abi=compile_contract("StakeToken").abi)
    held = _read(plan.rpc_url, "stake balance",
                 stake.functions.balanceOf(plan.deployer.address).call)
    lines.append(f"the deployer holds {show_amount(held, STAKE_DECIMALS, STAKE_SYMBOL)} (the "
                 "whole stake supply) and is the Timelock's proposer and executor; owner actions "
                 f"wait {format_duration(plan.params.timelock_delay)} in the open")
    return lines


def chain_blocks(w3: Web3, rpc_url: str, block_gas_limit: int | None = None,
                 block_seconds: float | None = None) -> tuple[int, int]:
    """(block gas limit, block time in ms) of the chain, what the answer window is sized to
    (DeployParams): each as told (`--block-gas-limit`, `--block-seconds`), else read: the
    latest block's gas limit, refused past MAX_PLAUSIBLE_BLOCK_GAS (Arbitrum's headers say
    2**50 while its sequencer carries about 7 M gas a second), and the mean time of the last
    BLOCK_TIME_SAMPLE blocks, refused on a younger chain (a devnet mining on demand, say)."""
    if block_gas_limit is not None and block_gas_limit < 1:
        raise ValueError(f"--block-gas-limit must be positive, not {block_gas_limit}")
    if block_seconds is not None and not 0 < block_seconds <= 3600:
        raise ValueError(f"--block-seconds must be above 0 and at most 3600, not {block_seconds}")
    latest = _read(rpc_url, "latest block", lambda: w3.eth.get_block("latest"))
    gas = block_gas_limit if block_gas_limit is not None else int(latest["gasLimit"])
    if gas > MAX_PLAUSIBLE_BLOCK_GAS:
        raise ChainError(
            f"the chain's latest block says its gas limit is {gas:,}, more than a chain "
            f"carries (more than {MAX_PLAUSIBLE_BLOCK_GAS:,}); pass --block-gas-limit with "
            "the gas a block really carries (the answer window is sized to it)")
    if block_seconds is not None:
        return gas, max(1, round(block_seconds * 1000))
    number = int(latest["number"])
    if number < BLOCK_TIME_SAMPLE:
        raise ChainError(
            f"the chain has {number + 1} blocks, too few to measure its block time (the "
            f"answer window is sized to it; {BLOCK_TIME_SAMPLE} needed): pass --block-seconds")
    earlier = _read(rpc_url, "an earlier block",
                    lambda: w3.eth.get_block(number - BLOCK_TIME_SAMPLE))
    spent_ms = (int(latest["timestamp"]) - int(earlier["timestamp"])) * 1000
    return gas, max(1, spent_ms // BLOCK_TIME_SAMPLE)


def _read(rpc_url: str, what: str, action: Callable):
    """A read from the node; any failure names the URL (it may not be an Ethereum node at all)."""
    try:
        return action()
    except (requests.ConnectionError, requests.Timeout, ConnectionError) as exc:
        raise ChainError(f"cannot reach the RPC at {rpc_url} ({what}): {type(exc).__name__}; "
                         "is the URL right and the node up?") from None
    except Exception as exc:
        detail = str(exc).splitlines()[0][:200] if str(exc) else ""
        raise ChainError(f"the RPC at {rpc_url} did not answer as an Ethereum node ({what}): "
                         f"{type(exc).__name__}" + (f": {detail}" if detail else "")) from None


def _check_key(deployer: LocalAccount, chain_id: int) -> None:
    """Anvil's published test keys (as devnet:N or as a raw key) deploy to a devnet chain only."""
    public = {devnet_account(i).address for i in range(DEVNET_ACCOUNT_COUNT)}
    if deployer.address in public and chain_id not in (DEVNET_CHAIN_ID, PEER_CHAIN_ID):
        raise AccountError(
            f"{deployer.address} is one of anvil's published test keys, and chain {chain_id} is "
            "not a devnet: anyone could spend from it, take the stake supply it receives and "
            "schedule owner actions through the Timelock. Use keystore:NAME (`tessera wallet new`)")


def _check_writable(out: Path) -> None:
    """Refuse now, not after the deploy, a network file that cannot be written."""
    folder = out.parent.resolve()
    while not folder.exists():
        folder = folder.parent
    if out.is_dir() or not folder.is_dir() or not os.access(folder, os.W_OK | os.X_OK):
        raise NetworkError(f"{out} cannot be written (a folder, or no permission)")


def _check_replaceable(out: Path, chain_id: int) -> bool:
    """--force replaces a network file that describes an earlier deploy to this very chain,
    alone; anything else there is refused (a typo must not overwrite another chain's file)."""
    try:
        existing = load_network(out)
    except NetworkError as exc:
        raise NetworkError(f"--force replaces only a network file, and {exc}") from None
    if existing.chain_id != chain_id:
        raise NetworkError(f"{out} describes chain {existing.chain_id}, not chain {chain_id} "
                           "that this RPC serves: choose another --out")
    if existing.peers:
        peers = ", ".join(str(p.chain_id) for p in existing.peers)
        raise NetworkError(f"{out} also names peer chains ({peers}) joined by a bridge to the "
                           "contracts it lists: replacing them would cut the bridge; choose "
                           "another --out")
    return True


def _treasury(treasury: str | None, deployer: LocalAccount) -> str:
    if treasury is None:
        return deployer.address
    if not Web3.is_address(treasury) or int(treasury, 16) == 0:
        raise ValueError(f"--treasury {treasury!r} is not a non-zero address")
    return Web3.to_checksum_address(treasury)


def _eth(wei: int) -> str:
    return show_amount(wei, 18, "ETH")
