"""A lying validator hiding its lie among decoys, caught by a real `tessera validator run` (its
`[liveness] watch` on, as by default), end to end: anvil, the honest validator as a process,
the liar scripted here. Chain time jumps from epoch to epoch (evm_setNextBlockTimestamp), so
the test waits only for the daemon.

The cast: the honest validator (devnet account 7); the LIAR (devnet account 8), a registered
validator whose endpoint is a scripted HTTP server here answering 404 to every
`GET /liveness/{epoch}/beats/{provider}`; DECOYS registered providers whose keys the test
holds (the liar's sybils: it signs their beats itself, and never sends them to anyone); the
LIE, a registered provider that never beats (no beat, no heartbeat). No provider process: the
honest validator holds no beat at all, so every inclusion is one it must ask the liar about.

Adversary strategies, and what the honest process does about each:
- Hide the lie among decoys so that a watcher sampling a few inclusions mostly hits decoys
  (and loses its bonds to the liar, who answers them on chain): the watch names all of them
  in ONE challenge for one bond (named_count == DECOYS + 1), so the decoys' answers settle
  nothing while the lie stays unanswered.
- Refuse to serve the decoys' beats (404), then answer them on chain to drain the bond: the
  liar earns only the fixed answer fee per decoy (about its gas), the rest of the bond comes
  back, and the watcher comes out ahead: its stake-token balance goes up by 20 % of the
  slash less the fees paid to the liar.
- Answer the lie with a beat it forged (the lie's Beat signed with the liar's own key): the
  contract refuses it, the lie stays unanswered.
- Leave the challenge open and hope nobody resolves it: the watch resolves its own challenges
  once the answer window ends; the liar is slashed exactly `inclusion_slash` (one lie), and
  at finality the lie is not up in that epoch while every decoy is."""

from __future__ import annotations

import time

import httpx
import pytest
from eth_account import Account
from tests.e2e.test_liveness import QUIET, jump
from tests.e2e.test_liveness_watchers import checks
from tests.support.processes import ValidatorProcess, wait_until
from tests.validator.test_liveness_watch import ScriptedEndpoint

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain
from tessera.chain.devnet import DEPLOYER
from tessera.chain.registry import ProviderRegistry
from tessera.chain.tokens import StakeToken
from tessera.chain.uptime import Uptime
from tessera.chain.validators import Validators
from tessera.errors import TxRefused
from tessera.protocol import liveness, messages
from tessera.validator.stake import ensure_validator

pytestmark = pytest.mark.e2e

HONEST, LIAR = 7, 8
DECOYS = 6
TSTK = 10**18
PROVIDER_STAKE = 100 * TSTK
LIAR_STAKE = 1_000 * TSTK       # slashed once, and still a validator after


def register_provider(deployer: Chain) -> Account:
    """A fresh account, funded by the deployer, registered as a provider (an endpoint nobody
    serves: no provider process runs here)."""
    account = Account.create()
    deployer.w3.provider.make_request("anvil_setBalance", [account.address, hex(10**20)])
    StakeToken(deployer).transfer(account.address, PROVIDER_STAKE, "a provider's stake")
    ProviderRegistry(Chain(deployer.network, account)).register(
        PROVIDER_STAKE, "CPU", 1, 1024, 1, "http://127.0.0.1:9", 1)
    return account


def test_a_liar_hiding_a_lie_among_decoys_is_slashed_by_a_real_watcher(tmp_path,
                                                                        private_devnet):
    started = time.monotonic()
    with private_devnet(tmp_path) as (devnet, network):
        deployer = Chain(network, devnet_account(DEPLOYER))
        uptime, validators = Uptime(deployer), Validators(deployer)
        token = StakeToken(deployer)
        endpoint = ScriptedEndpoint()              # 404 to every GET, every GET recorded
        liar = Chain(network, devnet_account(LIAR))
        ensure_validator(liar, LIAR_STAKE, endpoint.url)
        decoys = [register_provider(deployer) for _ in range(DECOYS)]
        lie = register_provider(deployer)
        registry = ProviderRegistry(deployer)
        index = {a.address: registry.index_of(a.address) for a in [*decoys, lie]}
        honest = ValidatorProcess(tmp_path, devnet.network_file, HONEST, name="honest",
                                  tables=QUIET)
        bond_unit, slash = uptime.challenge_rules()
        fee = uptime.answer_fee()
        challenger_bps = uptime.contract.functions.CHALLENGER_SHARE_BPS().call()
        try:
            honest.start()

            def challenges() -> list:
                return [c["args"] for c in deployer.events(
                    "Uptime", "InclusionsChallenged", network.deploy_block)]

            def watch_health() -> dict:
                return (honest.health() or {}).get("liveness_watch") or {}

            def resolved(cid: int) -> list:
                return [r["args"] for r in deployer.events(
                    "Uptime", "ChallengeResolved", network.deploy_block,
                    argument_filters={"challenge_id": cid})]

            epoch = jump(uptime)
            uptime.open_epoch()                    # idempotent: the honest process may too
            seed = uptime.seed(epoch)
            assert seed != bytes(32)

            def beat(account) -> bytes:
                return bytes.fromhex(liveness.sign_beat(
                    account, network.chain_id, uptime.address, epoch, seed)[2:])

            jump(uptime)                           # epoch + 1: the report window
            words = liveness.words_of(index.values(), registry.provider_count())
            Uptime(liar).report_liveness(epoch, words)
            # The honest validator was sent no beat: it holds none of the decoys' or the lie's.
            for account in [*decoys, lie]:
                reply = httpx.get(f"{honest.url}/liveness/{epoch}/beats/{account.address}",
                                  timeout=5)
                assert reply.status_code == 404, reply.text
            assert not uptime.beats(lie.address, epoch)   # the lie: no heartbeat either
            honest_before = token.balance_of(honest.address)
            liar_stake, liar_balance = validators.stake_of(liar.address), \
                token.balance_of(liar.address)

            jump(uptime)                           # epoch + 2: the watch's epoch
            [challenge] = wait_until(challenges, timeout=90,
                                     what=f"the honest watch's challenge of epoch {epoch}")
            cid, bond = challenge["challenge_id"], challenge["bond"]
            assert (challenge["validator"], challenge["challenger"], challenge["epoch"]) == \
                (liar.address, honest.address, epoch)
            assert challenge["named_count"] == DECOYS + 1
            assert set(liveness.indices_of(challenge["named"])) == set(index.values())
            assert bond == uptime.challenge_bond_for(DECOYS + 1) == bond_unit
            assert sorted(set(endpoint.asked)) == sorted(index)   # it asked the liar first
            assert token.balance_of(honest.address) == honest_before - bond

            # The liar: a forged beat for the lie is refused; the decoys' real beats are shown.
            forged = messages.sign(liar.account, liveness.beat_typed_data(
                network.chain_id, uptime.address, lie.address, epoch, seed))
            with pytest.raises(TxRefused, match="not signed by the provider"):
                Uptime(liar).answer_challenge(cid, [lie.address], [bytes.fromhex(forged[2:])])
            Uptime(liar).answer_challenge(cid, [a.address for a in decoys],
                                          [beat(a) for a in decoys])
            answers = deployer.events("Uptime", "InclusionAnswered", network.deploy_block,
                                      argument_filters={"challenge_id": cid})
            paid = sum(a["args"]["to_answerer"] for a in answers)
            assert len(answers) == DECOYS
            assert paid == DECOYS * fee == DECOYS * bond_unit // 512
            assert token.balance_of(liar.address) == liar_balance + paid
            assert uptime.challenge(cid)["state"] == liveness.CHALLENGE_OPEN   # the lie open

            jump(uptime)                           # epoch + 3: the answer window's last
            jump(uptime)                           # epoch + 4: over; the watch resolves
            [settled] = wait_until(lambda: resolved(cid), timeout=90,
                                   what=f"the honest watch resolving challenge {cid}")
            assert settled["unanswered"] == 1
            assert settled["slashed"] == slash
            assert settled["to_challenger"] == slash * challenger_bps // 10_000
            assert settled["bond_returned"] == bond - paid
            assert validators.stake_of(liar.address) == liar_stake - slash
            gain = token.balance_of(honest.address) - honest_before
            assert gain == bond - paid + settled["to_challenger"] - bond
            assert gain == slash * challenger_bps // 10_000 - paid > 0
            assert uptime.challenge(cid)["state"] == liveness.CHALLENGE_RESOLVED
            assert uptime.is_final(epoch)
            assert not uptime.is_up(lie.address, epoch)
            assert all(uptime.is_up(a.address, epoch) for a in decoys)
            wait_until(lambda: watch_health().get("challenges") == {"resolved": 1},
                       timeout=10, what="the honest /healthz showing the resolved challenge")
            assert watch_health()["examined_epoch"] >= epoch
            assert watch_health()["bonds_lost_day"] == 0        # resolved: a gain, no loss
            assert (checks(honest, "unproven"), checks(honest, "beat")) == (DECOYS + 1, 0)
        finally:
            honest.stop()
            endpoint.server.shutdown()
    print(f"\nliar caught: {DECOYS} decoys + 1 lie named, bond {bond}, paid to the liar "
          f"{paid}, watcher's gain {gain}, {time.monotonic() - started:.1f} s")
