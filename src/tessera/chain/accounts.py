"""Keys: encrypted keystores for real use, and anvil's published test keys for the devnet.

An account is named by a spec string:
  devnet:N        anvil's N-th published test key (public knowledge: never hold real value)
  keystore:NAME   an encrypted keystore under $TESSERA_HOME/keys, unlocked with a password
  0x<64 hex>      a raw private key (tests and scripts only)
"""

from __future__ import annotations

import json
import os
from functools import lru_cache
from pathlib import Path

from eth_account import Account
from eth_account.signers.local import LocalAccount

from tessera.errors import AccountError

# Anvil's default mnemonic, published in Foundry's documentation. Every key derived from it
# is public: anyone can spend from these addresses on any chain.
ANVIL_MNEMONIC = "test test test test test test test test test test test junk"
DEVNET_ACCOUNT_COUNT = 10


def tessera_home() -> Path:
    return Path(os.environ.get("TESSERA_HOME") or Path.home() / ".tessera")


def default_state_dir(role: str, port: int) -> Path:
    """Where a daemon keeps its state when its config names no `state_dir`: under TESSERA_HOME
    (`provider-7001`, `validator-7101`), so running one from a source checkout leaves nothing in
    the work tree, and two daemons on one machine never share a folder (ports differ)."""
    return tessera_home() / f"{role}-{port}"


def keys_dir() -> Path:
    return tessera_home() / "keys"


@lru_cache(maxsize=DEVNET_ACCOUNT_COUNT)
def devnet_account(index: int) -> LocalAccount:
    if not 0 <= index < DEVNET_ACCOUNT_COUNT:
        raise AccountError(f"devnet account index must be 0..{DEVNET_ACCOUNT_COUNT - 1}, got {index}")
    Account.enable_unaudited_hdwallet_features()
    return Account.from_mnemonic(ANVIL_MNEMONIC, account_path=f"m/44'/60'/0'/0/{index}")


def keystore_path(name: str) -> Path:
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise AccountError(f"wallet name {name!r} must be letters, digits, '-' or '_'")
    return keys_dir() / f"{name}.json"


def save_keystore(name: str, private_key: str | bytes, password: str) -> Path:
    path = keystore_path(name)
    if path.exists():
        raise AccountError(f"wallet {name!r} already exists at {path}")
    if len(password) < 8:
        raise AccountError("password must be at least 8 characters")
    account = Account.from_key(private_key)
    path.parent.mkdir(parents=True, exist_ok=True)
    encrypted = Account.encrypt(account.key, password)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(encrypted, handle)
    return path


def load_keystore(name: str, password: str) -> LocalAccount:
    path = keystore_path(name)
    if not path.exists():
        raise AccountError(f"no wallet named {name!r} (looked for {path})")
    try:
        key = Account.decrypt(json.loads(path.read_text()), password)
    except ValueError:
        raise AccountError(f"wrong password for wallet {name!r}") from None
    return Account.from_key(key)


def keystore_address(name: str) -> str:
    path = keystore_path(name)
    if not path.exists():
        raise AccountError(f"no wallet named {name!r} (looked for {path})")
    return "0x" + json.loads(path.read_text())["address"].removeprefix("0x")


def list_keystores() -> list[str]:
    return sorted(p.stem for p in keys_dir().glob("*.json")) if keys_dir().exists() else []


def resolve_account(spec: str, password: str | None = None) -> LocalAccount:
    """Turn an account spec (see module doc) into a signing account."""
    spec = spec.strip()
    if spec.startswith("devnet:"):
        index = spec.removeprefix("devnet:")
        if not index.isdigit():
            raise AccountError(f"devnet account spec {spec!r} must be devnet:N with N a number")
        return devnet_account(int(index))
    if spec.startswith("keystore:"):
        name = spec.removeprefix("keystore:")
        password = password if password is not None else os.environ.get("TESSERA_PASSWORD")
        if password is None:
            raise AccountError(f"wallet {name!r} is encrypted: set TESSERA_PASSWORD or pass a password")
        return load_keystore(name, password)
    if spec.startswith("0x") and len(spec) == 66:
        try:
            return Account.from_key(spec)
        except ValueError as exc:
            raise AccountError(f"invalid private key: {exc}") from None
    raise AccountError(f"unknown account spec {spec!r}: use devnet:N, keystore:NAME or a 0x private key")
