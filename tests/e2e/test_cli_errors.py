"""Bad input and faults at the command line: clear words, non-zero exit, no transaction sent."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from eth_account import Account

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain, retry
from tessera.chain.devnet import free_port
from tessera.chain.market import Market
from tessera.chain.network import Network
from tessera.errors import InsufficientFunds, RpcUnavailable

pytestmark = pytest.mark.e2e


def tessera(*args, home, input=None):
    return subprocess.run([sys.executable, "-m", "tessera.cli", *args], capture_output=True,
                          text=True, input=input, env={**os.environ, "TESSERA_HOME": str(home)},
                          timeout=120)


def nonce(chain: Chain, address: str) -> int:
    return chain.w3.eth.get_transaction_count(address)


def test_bad_job_spec_names_the_field_and_sends_nothing(tmp_path, devnet, tenant_chain,
                                                        tessera_home):
    spec = tmp_path / "job.toml"
    spec.write_text('[order]\nmax_price_per_gpu_hour = "abc"\nduration = "10m"\n'
                    '[workload]\nkind = "train-charlm"\n')
    before = nonce(tenant_chain, tenant_chain.address)
    result = tessera("job", "submit", str(spec), "--network", str(devnet.network_file),
                     home=tessera_home)
    assert result.returncode == 1
    assert "order.max_price_per_gpu_hour" in result.stderr
    assert nonce(tenant_chain, tenant_chain.address) == before


def test_impossible_job_finds_no_bid_and_refunds(tmp_path, devnet, provider, tenant_chain,
                                                 tessera_home):
    spec = tmp_path / "job.toml"
    spec.write_text('[order]\nmax_price_per_gpu_hour = "3.00"\nduration = "10m"\n'
                    'min_gpus = 64\nbid_window = "2s"\n[workload]\nkind = "train-charlm"\n')
    before = Market(tenant_chain).payment_token.balance_of(tenant_chain.address)
    result = tessera("job", "submit", str(spec), "--network", str(devnet.network_file),
                     home=tessera_home)
    assert result.returncode == 1
    assert "no valid bid" in result.stderr and "refunded" in result.stderr
    assert Market(tenant_chain).payment_token.balance_of(tenant_chain.address) == before


def test_unknown_network_file_is_named(tmp_path, tessera_home):
    missing = tmp_path / "nowhere.json"
    result = tessera("wallet", "balance", "devnet:1", "--network", str(missing), home=tessera_home)
    assert result.returncode == 1
    assert str(missing) in result.stderr


def test_config_with_missing_field_is_named(tmp_path, tessera_home):
    config = tmp_path / "provider.toml"
    config.write_text('[provider]\naccount = "devnet:2"\nstate_dir = "x"\n'
                      '[pricing]\nprice_per_gpu_hour = "1"\n')
    result = tessera("provider", "run", "--config", str(config), home=tessera_home)
    assert result.returncode == 1
    assert "provider.port" in result.stderr


def test_rpc_down_command_says_so(tmp_path, network, tessera_home):
    dead = network.model_copy(update={"rpc_url": f"http://127.0.0.1:{free_port()}"})
    path = tmp_path / "dead.json"
    path.write_text(dead.model_dump_json())
    result = tessera("wallet", "balance", "devnet:1", "--network", str(path), home=tessera_home)
    assert result.returncode == 1
    assert "cannot reach the chain's RPC" in result.stderr


def test_daemon_style_retry_backs_off_then_gives_up(network):
    dead = Network(**{**network.model_dump(), "rpc_url": f"http://127.0.0.1:{free_port()}"})
    chain = Chain(dead, devnet_account(0), timeout=1)
    delays = []
    with pytest.raises(RpcUnavailable):
        retry(chain.check_connected, attempts=4, base_delay=0.01,
              on_retry=lambda exc, delay: delays.append(delay))
    assert delays == [0.01, 0.02, 0.04]


def test_not_enough_tokens_is_said_before_any_transaction(network):
    poor = Account.create()
    rich = Chain(network, devnet_account(0))
    rich.w3.eth.wait_for_transaction_receipt(rich.w3.eth.send_transaction(
        {"from": rich.address, "to": poor.address, "value": 10**18}))
    chain = Chain(network, poor)
    with pytest.raises(InsufficientFunds, match="not enough TUSD"):
        Market(chain).create_order(b"\x00" * 32, "", 1, 0, 1_000_000, 600, 1, 1_000_000)
    assert nonce(chain, poor.address) == 0


def test_wallet_new_show_and_balance(tmp_path, devnet, tessera_home):
    env_home = tmp_path / "wallet-home"
    made = subprocess.run([sys.executable, "-m", "tessera.cli", "wallet", "new", "alice"],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "TESSERA_HOME": str(env_home),
                               "TESSERA_PASSWORD": "correct horse"})
    assert made.returncode == 0, made.stderr
    keystore = json.loads((env_home / "keys" / "alice.json").read_text())
    assert "crypto" in keystore  # encrypted, not a bare key
    shown = tessera("wallet", "show", "devnet:0", home=tessera_home)
    assert "public" in shown.stdout
    balance = tessera("wallet", "balance", "devnet:5", "--network", str(devnet.network_file),
                      home=tessera_home)
    assert balance.returncode == 0 and "TUSD" in balance.stdout


def test_job_commands_follow_a_lease_from_submit_to_close(tmp_path, devnet, provider, tessera_home):
    spec = tmp_path / "job.toml"
    spec.write_text('name = "cli"\n[order]\nmax_price_per_gpu_hour = "3.00"\nduration = "10m"\n'
                    'bid_window = "2s"\n[dataset]\nmax_bytes = 65536\n'
                    '[workload]\nsteps = 20\neval_every = 10\n')
    net = ["--network", str(devnet.network_file), "--account", "devnet:8"]
    submitted = tessera("job", "submit", str(spec), "--no-close", *net, home=tessera_home)
    assert submitted.returncode == 0, submitted.stderr
    lease_id = submitted.stdout.split("lease ", 1)[1].split()[0]
    status = tessera("job", "status", lease_id, *net, home=tessera_home)
    assert status.returncode == 0 and "succeeded" in status.stdout and "open" in status.stdout
    logs = tessera("job", "logs", lease_id, *net, home=tessera_home)
    assert '"event": "done"' in logs.stdout
    results = tessera("job", "results", lease_id, "--out", str(tmp_path / "out"), *net,
                      home=tessera_home)
    assert results.returncode == 0 and "recomputed" in results.stdout
    assert (tmp_path / "out" / "model.pt").exists()
    closed = tessera("job", "close", lease_id, *net, home=tessera_home)
    assert closed.returncode == 0 and "refund" in closed.stdout
    again = tessera("job", "close", lease_id, *net, home=tessera_home)
    assert again.returncode == 1 and "already closed" in again.stderr
