"""TEST ONLY: a provider daemon whose DiLoCo workers cheat, for the end-to-end tests of
verification and the demo's cheater act.

    python -m tessera.testing.cheating_provider --cheat NAME --config provider.toml \
        [--collude-with OTHER_PROVIDER_STATE_DIR ...]

The same daemon as `tessera provider run --config provider.toml` (same config, HTTP API, chain
transactions and signatures: it signs what its worker committed as an honest node would), but
its DiLoCo workers run `tessera.testing.cheating_worker`, which plays the named cheat
(cheats.py). Never run it with a stake you want back: a spot check or a validator catches it
and its stake is slashed.

`--collude-with` (copy-worker): the state directory of another provider on this machine whose
leases the cheat copies from disk (`<state_dir>/leases/<lease id>/`, the provider's job
folders): a colluding sibling, since a provider's HTTP API serves a round's states only to the
lease's tenant and validators.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import typer

from tessera.command_errors import run_guarded
from tessera.compute import numerics
from tessera.provider.config import ProviderConfig, load_provider_config
from tessera.provider.node import ProviderNode
from tessera.provider.service import run_provider
from tessera.testing.cheats import CHEATS, TESTING_FILE

CHEATING_WORKER = {"diloco-worker": "tessera.testing.cheating_worker"}   # job_modules


class CheatingProvider:
    """Builds the ordinary ProviderNode with the cheat plugged into its jobs."""

    def __init__(self, cheat: str, collude_with: list[Path] | None = None):
        if cheat not in CHEATS:
            raise ValueError(f"unknown test-only cheat {cheat!r}; known: {tuple(CHEATS)}")
        self.cheat = cheat
        self.collude_with = [Path(p) for p in collude_with or []]
        self.node: ProviderNode | None = None

    def build(self, config: ProviderConfig) -> ProviderNode:
        self.node = ProviderNode(config, job_modules=CHEATING_WORKER, prepare_job=self.prepare_job)
        self.node.log("testing-cheat", "warning", cheat=self.cheat,
                      note="TEST ONLY: this node's DiLoCo workers cheat; it will be slashed")
        return self.node

    def prepare_job(self, lease_id: int, folder: Path) -> None:
        """Tell the lease's worker how to cheat (a file in its job folder)."""
        folder.mkdir(parents=True, exist_ok=True)
        testing = {"cheat": self.cheat}
        if self.cheat == "copy-worker":
            testing["siblings"] = self.sibling_workers(lease_id)
        (folder / TESTING_FILE).write_text(json.dumps(testing))

    def sibling_workers(self, lease_id: int) -> list[dict]:
        """The copy-worker cheat's victims: the other leases of this lease's Market order and
        their providers' endpoints, all public on chain, and where a colluding provider keeps
        each lease's job folder (one entry per `--collude-with` directory)."""
        node = self.node
        order_id = node.market.lease(lease_id).order_id
        created = node.chain.events("Market", "LeaseCreated", node.chain.network.deploy_block)
        siblings = []
        for log in created:
            args = log["args"]
            if args["order_id"] != order_id or args["lease_id"] == lease_id:
                continue
            offer = node.market.registry.provider_offer(args["provider"])
            if offer is None:
                continue
            sibling = {"lease_id": args["lease_id"], "endpoint": offer.endpoint}
            siblings += [{**sibling, "folder": str(d / "leases" / str(args["lease_id"]))}
                         for d in self.collude_with] or [sibling]
        node.log("testing-cheat-siblings", "warning", lease_id=lease_id, siblings=siblings)
        return siblings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tessera.testing.cheating_provider",
                                     description="TEST ONLY: a provider whose DiLoCo workers cheat")
    parser.add_argument("--cheat", required=True, choices=tuple(CHEATS))
    parser.add_argument("--collude-with", type=Path, action="append", default=[],
                        metavar="STATE_DIR", help="copy-worker: a colluding provider's state "
                        "directory on this machine (repeatable)")
    parser.add_argument("--config", type=Path, required=True, help="provider.toml")
    return parser


def main(argv: list[str] | None = None) -> int:
    numerics.pin()   # before the first torch op (hardware checks), as `tessera provider run`
    args = build_parser().parse_args(argv)
    plugin = CheatingProvider(args.cheat, args.collude_with)
    try:
        config = run_guarded(lambda: load_provider_config(args.config))
        run_guarded(lambda: run_provider(config, plugin.build(config)))
    except typer.Exit as exc:
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
