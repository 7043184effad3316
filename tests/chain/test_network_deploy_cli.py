"""`tessera network deploy` against a real anvil that is not a devnet (chain 424242, nothing
deployed): one deploy whose network file loads and whose contracts answer, then every refusal,
each of which sends nothing (the chain's block number and the deployer's nonce stay put) and
writes nothing.

How a party (or a slip of the hand) would get round each check, and the test of it:
- a typo in --out overwrites another network's file: an existing file is refused; --force
  replaces only a network file of this very chain (a text file, another chain's file: refused);
- a deployer short of gas starts anyway and leaves half a deploy: zero balance and a balance
  under the estimate are refused, and the estimate is checked against the gas a real deploy used
  (never under it);
- anvil's published test keys (`devnet:0`, or the same key pasted raw) deploy to a public chain,
  handing the stake supply and the Timelock's proposer role to anyone: refused off the devnet
  chain ids, even though anvil funds those keys here;
- the prompt is answered no (or not at all): nothing is sent;
- an unreachable RPC (or one that is no node): refused, the URL named, before anything else.
"""

from __future__ import annotations

import re

import pytest
from eth_account import Account
from typer.testing import CliRunner
from web3 import Web3

from tessera.chain.accounts import devnet_account, save_keystore
from tessera.chain.client import Chain
from tessera.chain.compiler import CONTRACT_NAMES
from tessera.chain.devnet import Devnet, free_port
from tessera.chain.market import Market
from tessera.chain.network import Network, load_network, save_network
from tessera.chain.network_deploy import estimate_gas
from tessera.chain.timelock import Timelock
from tessera.chain.tokens import PaymentToken, StakeToken
from tessera.chain.uptime import Uptime
from tessera.cli import app
from tessera.protocol import liveness

CHAIN_ID = 424_242
EPOCH = 600
TREASURY = "0x" + "7e" * 20


@pytest.fixture(scope="module")
def anvil(tmp_path_factory):
    """A bare anvil (no contracts) on a free port, serving a chain id no devnet uses."""
    devnet = Devnet(tmp_path_factory.mktemp("network-deploy"))
    w3 = devnet._start_anvil(free_port(), CHAIN_ID, None, "anvil.log", devnet.pid_file)
    try:
        yield w3
    finally:
        devnet.down()


def funded(w3: Web3, wei: int = 10**21) -> str:
    """A fresh key (not one of anvil's) holding `wei` of gas coin."""
    account = Account.create()
    w3.provider.make_request("anvil_setBalance", [account.address, hex(wei)])
    return account.key.to_0x_hex()


def deploy(w3: Web3, key: str, out, *extra: str, input: str | None = None,
           block_seconds: str | None = "1"):
    """`tessera network deploy` on this anvil; told a block time (anvil mines on demand, so it
    has none to measure) unless `block_seconds` is None."""
    args = ["network", "deploy", "--rpc-url", w3.provider.endpoint_uri, "--account", key,
            "--out", str(out), *extra] + (["--block-seconds", block_seconds] if block_seconds else [])
    result = CliRunner().invoke(app, args, input=input)
    return result.exit_code, " ".join(result.output.split())


def test_deploy_writes_a_network_whose_contracts_answer(anvil, tmp_path):
    key = funded(anvil)
    deployer = Account.from_key(key).address
    out = tmp_path / "testnet.json"
    code, output = deploy(anvil, key, out, "--epoch-seconds", str(EPOCH), "--treasury",
                          TREASURY, "--yes")
    assert code == 0, output
    assert f"chain {CHAIN_ID}" in output and deployer in output
    assert re.search(r"estimated gas: about [\d,]+", output)
    for name in CONTRACT_NAMES:
        assert re.search(rf"deployed {name} at 0x[0-9a-fA-F]{{40}}", output), name

    network = load_network(out)
    assert (network.name, network.chain_id, network.rpc_url) == \
        ("testnet", CHAIN_ID, anvil.provider.endpoint_uri)
    chain = Chain(network)
    for name, address in network.contracts.items():
        assert len(anvil.eth.get_code(address)) > 0, name
    assert Uptime(chain).epoch_length() == EPOCH
    # the answer window is sized to the chain's gas a second (its block gas limit, one block a
    # second at most): what the output says is what Uptime got, and it holds a whole report
    answer_epochs = Uptime(chain).liveness_rules()[1]
    assert f"answer window {answer_epochs} epoch(s)" in output
    assert answer_epochs == liveness.answer_epochs_for(EPOCH, anvil.eth.get_block(0)["gasLimit"],
                                                       1000)
    assert chain.call(chain.market.functions.treasury()) == Web3.to_checksum_address(TREASURY)
    # deploy_block is the block of the first contract: nothing of it exists before
    assert anvil.eth.get_code(network.address("StakeToken"), network.deploy_block - 1) == b""
    assert len(anvil.eth.get_code(network.address("StakeToken"), network.deploy_block)) > 0

    # owner powers are the Timelock's, and the output says so; the deployer holds every TSTK
    timelock = Timelock(chain).address
    for contract in (chain.registry, chain.validators, chain.market, chain.stake_token):
        assert chain.call(contract.functions.owner()) == timelock
    assert "Market is owned by Timelock" in output and "ProviderRegistry is owned by Timelock" in output
    assert "PaymentToken is owned by the deployer" in output
    # nothing funded or minted for test accounts (what `devnet up` would add)
    stake = StakeToken(chain)
    assert stake.balance_of(deployer) == chain.call(stake.contract.functions.totalSupply()) > 0
    assert stake.balance_of(devnet_account(5).address) == 0
    assert chain.call(PaymentToken(chain).contract.functions.totalSupply()) == 0
    assert Market(chain).fee_bps() == 250

    # the estimate is an upper one, and not wildly so
    used = sum(anvil.eth.get_transaction_receipt(tx["hash"])["gasUsed"]
               for n in range(network.deploy_block, anvil.eth.block_number + 1)
               for tx in anvil.eth.get_block(n, full_transactions=True)["transactions"]
               if tx["from"] == deployer)
    assert used <= estimate_gas() <= used * 1.2

    # --force replaces an earlier deploy to the same chain (here, this one) with a fresh set
    code, output = deploy(anvil, key, out, "--force", "--yes", "--name", "again")
    assert code == 0, output
    again = load_network(out)
    assert again.name == "again" and again.address("Market") != network.address("Market")
    assert Uptime(Chain(again)).epoch_length() == 3600       # the command's default epoch


def unchanged(w3: Web3, key: str):
    """What a refused deploy must leave alone: the chain's height and the deployer's nonce."""
    return w3.eth.block_number, w3.eth.get_transaction_count(Account.from_key(key).address)


def test_refusals_send_and_write_nothing(anvil, tmp_path, monkeypatch):
    key = funded(anvil)
    out = tmp_path / "net.json"
    before = unchanged(anvil, key)

    dead = f"http://127.0.0.1:{free_port()}"
    result = CliRunner().invoke(app, ["network", "deploy", "--rpc-url", dead, "--account", key,
                                      "--out", str(out), "--yes"])
    assert result.exit_code != 0 and dead in " ".join(result.output.split())

    code, output = deploy(anvil, Account.create().key.to_0x_hex(), out, "--yes")
    assert code != 0 and "holds no gas coin" in output

    # a keystore deployer (the documented way), unlocked from TESSERA_PASSWORD
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path / "home"))
    empty = Account.create()
    save_keystore("deployer", empty.key, "a long password")
    monkeypatch.setenv("TESSERA_PASSWORD", "wrong password")
    code, output = deploy(anvil, "keystore:deployer", out, "--yes")
    assert code != 0 and "wrong password" in output
    monkeypatch.setenv("TESSERA_PASSWORD", "a long password")
    code, output = deploy(anvil, "keystore:deployer", out, "--yes")
    assert code != 0 and f"deployer {empty.address} holds no gas coin" in output

    poor = funded(anvil, 10**9)          # a gwei's worth: far under the estimate
    code, output = deploy(anvil, poor, out, "--yes")
    assert code != 0 and "less than the deploy's estimated" in output

    for spec in ("devnet:0", devnet_account(0).key.to_0x_hex()):     # funded by anvil here
        code, output = deploy(anvil, spec, out, "--yes")
        assert code != 0 and "published test keys" in output and f"chain {CHAIN_ID}" in output

    code, output = deploy(anvil, key, out, input="n\n")
    assert code != 0 and "nothing was sent" in output
    assert not out.exists()
    assert unchanged(anvil, key) == before

    out.write_text("keep me")
    code, output = deploy(anvil, key, out, "--yes")
    assert code != 0 and "already exists" in output
    code, output = deploy(anvil, key, out, "--yes", "--force")
    assert code != 0 and "replaces only a network file" in output
    assert out.read_text() == "keep me"

    other = tmp_path / "other-chain.json"
    save_network(Network(name="mainnet", chain_id=1, rpc_url="http://127.0.0.1:1",
                         contracts={n: f"0x{i + 1:040x}" for i, n in enumerate(CONTRACT_NAMES)}),
                 other)
    text = other.read_text()
    code, output = deploy(anvil, key, other, "--yes", "--force")
    assert code != 0 and "describes chain 1, not chain 424242" in output
    assert other.read_text() == text

    code, output = deploy(anvil, key, tmp_path / "x.json", "--treasury", "0x1234", "--yes")
    assert code != 0 and "not a non-zero address" in output
    # a chain too young to measure its block time, not told it: refused, naming the flag
    code, output = deploy(anvil, key, tmp_path / "x.json", "--yes", block_seconds=None)
    assert code != 0 and "--block-seconds" in " ".join(output.split())
    # epochs so short that Uptime's 64 answer epochs cannot hold a whole report's answers on
    # this chain (30 M gas, a block a second): refused, with the shortest that works
    code, output = deploy(anvil, key, tmp_path / "x.json", "--epoch-seconds", "1", "--yes")
    flat = " ".join(output.split())
    assert code != 0 and "epochs of 1 s are too short" in flat and "use epochs of at least" in flat
    assert unchanged(anvil, key) == before
    assert not (tmp_path / "x.json").exists()



def test_a_deploy_that_runs_dry_halfway_writes_nothing(anvil, tmp_path, monkeypatch):
    """The balance check is an estimate: should the gas run out anyway (a price spike), the
    command stops at the failing transaction, says how far it got, and writes no network file
    naming a half-wired set of contracts."""
    import tessera.chain.network_deploy as network_deploy

    monkeypatch.setattr(network_deploy, "estimate_gas", lambda: 1)    # the estimate lies
    key = funded(anvil, 8_000_000 * anvil.eth.gas_price)              # a few contracts' worth
    out = tmp_path / "half.json"
    code, output = deploy(anvil, key, out, "--yes")
    assert code != 0 and "the deploy stopped after" in output and "Nothing was written" in output
    assert "deployed StakeToken at" in output and "deployed Timelock" not in output
    assert not out.exists()
