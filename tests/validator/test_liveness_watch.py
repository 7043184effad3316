"""The liveness watch (validator/liveness_watch.py) against a real anvil: a watching validator
checks the other validators' liveness reports, asks the reporters for the beats it lacks, and
challenges (then resolves) the inclusions no one can show a beat for: ONE challenge per report
naming all of them (Uptime.challenge_inclusions).

The cast, on one devnet: providers 1-5; an honest validator (a real LivenessDuty served over
HTTP by uvicorn: its `GET /liveness/{epoch}/beats/{provider}`); liars whose endpoints are
scripted HTTP servers (404, junk, forged beats, silence); DECOYS registered providers whose
keys the tests hold (a liar's sybils); the watcher, run in process. Chain time jumps epoch by
epoch (evm_setNextBlockTimestamp), so nothing waits for an epoch.

Adversary strategies, and where each is tested (HTTP-only ones: test_liveness_watch_units.py):
- Name an offline provider (collusion: its tenant gets no refund) and answer the watcher's
  question with 404: named, unanswerable, slashed; the watcher earns 20 % of the slash
  (test_a_liar_naming_an_offline_provider_is_slashed_and_the_watcher_paid).
- Make the watcher lose bonds on honest inclusions: it never names a provider whose beat it
  holds (not even asked) or any reporter serves; a liar naming a provider that IS live (an
  honest validator holds the beat) is not challenged on it either (same test).
- Serve something instead of a 404 (junk JSON, a beat signed by another key, the provider's
  real signature over another epoch's seed): no beat (test_c_junk_forged_beats_and_...).
- Shield a lie with decoys (sybil inclusions it answers on chain but refuses to serve), so
  many that a watcher sampling a few per epoch mostly hits decoys: every unproven inclusion
  is named in one challenge, one bond, so the decoys' answers settle nothing, earn the liar
  only the answer fee each, and the lie is slashed (test_k_twenty_decoys_shield_no_lie);
  front-run the watcher with one's own challenge of the decoys, so that the watcher's set is
  refused or has only decoys: the watcher leaves out what is named or proven, and the
  contract leaves out what was named meanwhile (test_m_...).
- Grief: hold the beats (sybil providers), refuse to serve them, answer the challenge: it
  earns the answer fee per beat (about its gas), the rest of the bond comes back to the
  watcher; within the daily loss budget; no back-off, so a lie on the next epoch is still
  slashed (test_f_...); many liars or a huge report: the budget (in named providers) and the
  balance (in bonds) are shared a bond's worth at a time in a random order, a short share
  names a random part (test_d_the_budget_...); the budget itself (test_g_...).
- Front-run the watcher, crash between the send and the save, lose the database: no
  second bond, nothing named twice (test_e_restarts_and_front_running).
- Publish an unparseable endpoint so that every pass fails and nothing is challenged or
  resolved (review finding r1): no endpoint, challenged; a failing step stops no other
  (test_h_...).
- Stay silent so that the passes outlast the window (review finding r3): one GET a pass to a
  silent validator, the last call's included, the challenge sent in time (test_i_...).
- Not testable here, by design: a liar that serves a valid beat it was never sent can only
  serve one the provider signed over that epoch's seed, so the inclusion is true as far as
  liveness goes; a provider that signs beats while its service is down proves key possession
  only (endpoints are judged by probes, docs/validators.md)."""

from __future__ import annotations

import io
import json
import sqlite3
import threading
import time
from contextlib import ExitStack
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from tests.support.uvicorn_server import serve

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain
from tessera.chain.registry import ProviderRegistry
from tessera.chain.tokens import StakeToken
from tessera.chain.uptime import Uptime
from tessera.chain.validators import Validators
from tessera.errors import SpecError
from tessera.logs import EventLog
from tessera.protocol import liveness
from tessera.protocol.jobspec import parse_toml_model
from tessera.validator import beat_fetch, liveness_watch
from tessera.validator.config import LivenessSection
from tessera.validator.liveness import LivenessDuty, liveness_routes
from tessera.validator.liveness_store import LivenessStore
from tessera.validator.liveness_watch import LivenessWatch
from tessera.validator.liveness_watch_bonds import share_named
from tessera.validator.liveness_watch_store import WatchStore
from tessera.validator.stake import ensure_validator

PROVIDERS = (1, 2, 3, 4, 5)
HONEST, WATCHER, LIAR, FRONT = 6, 7, 8, 9
TSTK = 10**18
STAKE = 100 * TSTK
LIAR_STAKE = 2_000 * TSTK   # slashed 50 TSTK per lie caught, and still a validator after
DECOYS = 20                 # well above the old caps (8 challenges an epoch)


class ScriptedEndpoint:
    """The liar's endpoint: GET /liveness/{epoch}/beats/{provider} answers what `answers`
    says for the provider (status, body, seconds to wait first); 404 otherwise."""

    def __init__(self):
        self.answers: dict[str, tuple[int, bytes, float]] = {}
        self.asked: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                provider = self.path.rstrip("/").split("/")[-1]
                outer.asked.append(provider)
                status, body, delay = outer.answers.get(provider, (404, b'{"detail":"none"}', 0))
                time.sleep(delay)
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@dataclass
class World:
    home: Path
    network: object
    uptime: Uptime                 # read-only view (the deployer's account: opens epochs)
    honest: LivenessDuty
    liar: Chain
    endpoint: ScriptedEndpoint
    index: dict[int, int]          # devnet account -> registry index
    stack: ExitStack

    def address(self, who: int) -> str:
        return devnet_account(who).address

    def jump(self, to: int | None = None, offset: int = 0) -> int:
        """Mine a block `offset` seconds into epoch `to` (default: the next one)."""
        epoch = self.uptime.current_epoch() + 1 if to is None else to
        w3 = self.uptime.chain.w3
        w3.provider.make_request("evm_setNextBlockTimestamp",
                                 [self.uptime.genesis() + epoch * self.uptime.epoch_length()
                                  + offset])
        w3.provider.make_request("evm_mine", [])
        return epoch

    def new_epoch(self) -> tuple[int, bytes]:
        """The next epoch, opened; the honest validator has seen it."""
        epoch = self.jump()
        self.uptime.open_epoch()
        self.honest.poll_once()
        return epoch, self.uptime.seed(epoch)

    def beat(self, who: int, epoch: int, seed: bytes) -> str:
        return liveness.sign_beat(devnet_account(who), self.network.chain_id,
                                  self.uptime.address, epoch, seed)

    def beat_to_honest(self, who: int, epoch: int, seed: bytes) -> None:
        self.honest.accept(liveness.SignedBeat(provider=self.address(who), epoch=epoch,
                                               signature=self.beat(who, epoch, seed)))

    def liar_reports(self, epoch: int, names: list[int], liar: Chain | None = None,
                     extra: list[int] = ()) -> list[int]:
        """`liar` reports devnet providers `names` and registry indices `extra` (decoys)."""
        indices = [self.index[p] for p in names] + list(extra)
        words = liveness.words_of(indices, max(indices) + 1)
        Uptime(liar or self.liar).report_liveness(epoch, words)
        return words

    def report_round(self, epoch: int, liar_names: list[int],
                     liar: Chain | None = None) -> list[int]:
        """Epoch+1: the honest validator reports what it holds, the liar what it likes (its
        words returned)."""
        self.jump(epoch + 1)
        self.honest.poll_once()
        return self.liar_reports(epoch, liar_names, liar) if liar_names else []

    def challenges(self, epoch: int, validator: str | None = None,
                   challenger: int | None = WATCHER) -> list[dict]:
        """InclusionsChallenged of `epoch` (by the watcher unless `challenger` says otherwise;
        None: anyone's), each with `indices`: the registry indices it named."""
        logs = self.uptime.chain.events("Uptime", "InclusionsChallenged",
                                        self.network.deploy_block)
        by = None if challenger is None else self.address(challenger)
        return [dict(x["args"], indices=set(liveness.indices_of(x["args"]["named"])))
                for x in logs if x["args"]["epoch"] == epoch
                and validator in (None, x["args"]["validator"])
                and by in (None, x["args"]["challenger"])]

    def indices(self, *who: int) -> set[int]:
        return {self.index[w] for w in who}

    def answer(self, answerer: Chain, cid: int, epoch: int, seed: bytes,
               signers: list[LocalAccount]) -> None:
        """`answerer` shows these providers' beats (real ones: it holds them) on chain."""
        Uptime(answerer).answer_challenge(
            cid, [a.address for a in signers],
            [bytes.fromhex(liveness.sign_beat(a, self.network.chain_id, self.uptime.address,
                                              epoch, seed)[2:]) for a in signers])

    def new_liar(self) -> tuple[Chain, ScriptedEndpoint]:
        """A fresh validator with a scripted endpoint of its own (404 to every GET)."""
        account = Account.create()
        self.uptime.chain.w3.provider.make_request("anvil_setBalance",
                                                   [account.address, hex(10**20)])
        StakeToken(self.uptime.chain).transfer(account.address, LIAR_STAKE, "a liar's stake")
        endpoint = ScriptedEndpoint()
        self.stack.callback(endpoint.server.shutdown)
        chain = Chain(self.network, account)
        ensure_validator(chain, LIAR_STAKE, endpoint.url)
        return chain, endpoint


@pytest.fixture(scope="module")
def world(tmp_path_factory, private_devnet):
    home = tmp_path_factory.mktemp("watch")
    with private_devnet(home) as (_, network), ExitStack() as stack:
        for who in PROVIDERS:
            ProviderRegistry(Chain(network, devnet_account(who))).register(
                STAKE, "CPU", 1, 1024, 1, "http://127.0.0.1:9", 1)
        honest_chain = Chain(network, devnet_account(HONEST))
        honest = LivenessDuty(honest_chain, devnet_account(HONEST), home / "honest",
                              EventLog("honest", io.StringIO()), CollectorRegistry(),
                              open_epochs=False)
        honest.prepare()
        stack.callback(honest.close)
        app = FastAPI()
        app.include_router(liveness_routes(honest))
        ensure_validator(honest_chain, STAKE, stack.enter_context(serve(app)))
        endpoint = ScriptedEndpoint()
        stack.callback(endpoint.server.shutdown)
        liar = Chain(network, devnet_account(LIAR))
        ensure_validator(liar, LIAR_STAKE, endpoint.url)
        ensure_validator(Chain(network, devnet_account(WATCHER)), STAKE, "http://127.0.0.1:9")
        registry = ProviderRegistry(honest_chain)
        index = {who: registry.index_of(devnet_account(who).address) for who in PROVIDERS}
        yield World(home, network, Uptime(Chain(network, devnet_account(0))), honest, liar,
                    endpoint, index, stack)


@pytest.fixture(scope="module")
def decoys(world) -> list[tuple[LocalAccount, int]]:
    """DECOYS registered providers (account, registry index): a liar's sybils, whose beats it
    holds (the test signs them) and never serves."""
    deployer = world.uptime.chain
    out = []
    for _ in range(DECOYS):
        account = Account.create()
        deployer.w3.provider.make_request("anvil_setBalance", [account.address, hex(10**20)])
        StakeToken(deployer).transfer(account.address, STAKE, "a decoy's stake")
        ProviderRegistry(Chain(world.network, account)).register(
            STAKE, "CPU", 1, 1024, 1, "http://127.0.0.1:9", 1)
        out.append((account, ProviderRegistry(deployer).index_of(account.address)))
    return out


def make_watch(world: World, name: str, **options) -> tuple[LivenessWatch, io.StringIO]:
    state = world.home / name
    stream = io.StringIO()
    watch = LivenessWatch(Chain(world.network, devnet_account(WATCHER)),
                          LivenessStore(state / "liveness.db"), state,
                          EventLog("watch", stream), CollectorRegistry(), **options)
    watch.prepare()
    return watch, stream


def stake_balance(world: World, who: int) -> int:
    return StakeToken(world.uptime.chain).balance_of(world.address(who))


def spy_events(watch: LivenessWatch) -> list[tuple[str, int]]:
    """(event, from_block) of every log read `watch` makes from now on."""
    reads: list[tuple[str, int]] = []
    real = watch.chain.events

    def events(contract, event, from_block, *args, **kwargs):
        reads.append((event, from_block))
        return real(contract, event, from_block, *args, **kwargs)
    watch.chain.events = events
    return reads


def test_a_liar_naming_an_offline_provider_is_slashed_and_the_watcher_paid(world):
    """Provider 1 is offline (no beat anywhere) and the liar names it: named, nobody can
    answer, resolved after the answer window: the liar loses `inclusion_slash`, the watcher
    gets its bond back and 20 % of it. Provider 2 beat only the honest validator, which names
    it, and the liar names it too: the watcher (which lacks the beat) fetches it from the
    honest validator and names neither. Provider 3's beat the watcher holds itself: the
    liar's inclusion of it is not even asked about."""
    watch, log = make_watch(world, "w-a")
    epoch, seed = world.new_epoch()
    world.beat_to_honest(2, epoch, seed)
    watch.beats.add_beat(epoch, world.address(3), world.beat(3, epoch, seed))
    world.endpoint.asked.clear()
    world.report_round(epoch, liar_names=[1, 2, 3])
    honest_words = world.honest.store.report(epoch)["words"]
    assert liveness.indices_of(honest_words) == [world.index[2]]

    world.jump(epoch + 2)                                    # the report window closed
    validators = watch.validators
    slashed_before = validators.stake_of(world.liar.address)
    balance_before = stake_balance(world, WATCHER)
    watch.poll_once()
    [challenge] = world.challenges(epoch)
    assert (challenge["validator"], challenge["indices"], challenge["named_count"]) == \
        (world.liar.address, world.indices(1), 1)
    assert sorted(world.endpoint.asked) == sorted([world.address(1), world.address(2)])
    assert stake_balance(world, WATCHER) == balance_before - watch.bond
    assert watch.store.check(epoch, world.address(2))[0] == "beat"
    assert watch.examined_epoch == epoch
    watch.poll_once()                                        # nothing more for this epoch
    assert len(world.challenges(epoch)) == 1

    world.jump(epoch + 3)                                    # the answer window: no answer
    watch.poll_once()
    assert watch.uptime.challenge(challenge["challenge_id"])["state"] == 1
    world.jump(epoch + 4)
    watch.poll_once()
    assert watch.uptime.challenge(challenge["challenge_id"])["state"] == 3
    assert validators.stake_of(world.liar.address) == slashed_before - watch.slash
    assert stake_balance(world, WATCHER) == balance_before + watch.slash * 2_000 // 10_000
    assert not watch.uptime.is_up(world.address(1), epoch)
    assert watch.uptime.is_up(world.address(2), epoch)
    assert watch.health()["challenges"] == {"resolved": 1}
    assert watch.health()["bonds_lost_day"] == 0
    events = [json.loads(line)["event"] for line in log.getvalue().splitlines()]
    assert "liveness-challenged" in events and "liveness-challenge-resolved" in events
    watch.poll_once()                                        # resolved once
    watch.close()


def test_c_junk_forged_beats_and_silence_are_no_beat(world):
    """What a liar serves instead of a 404: junk (provider 1), a beat signed by another key
    (provider 4), provider 5's real signature over another epoch's seed: each no beat, so
    each inclusion is unproven; silence past the deadline (provider 2) stays pending (an
    honest endpoint may be down for a moment), and so nothing is sent yet: the report's ONE
    challenge waits for all of its inclusions. In the last call provider 2 is asked once
    more, still silent: no beat, and the challenge names all four; resolved, the liar is
    slashed four times."""
    liar, endpoint = world.new_liar()
    watch, _ = make_watch(world, "w-c", timeout_s=0.5)
    old_epoch, old_seed = world.new_epoch()
    epoch, seed = world.new_epoch()
    stranger = Account.create()
    forged = liveness.sign_beat(stranger, world.network.chain_id, world.uptime.address, epoch,
                                seed)

    def served(who: int, signature: str) -> bytes:
        return json.dumps({"provider": world.address(who), "epoch": epoch,
                           "signature": signature}).encode()

    endpoint.answers = {
        world.address(1): (200, b'{"provider": "junk"}', 0),
        world.address(4): (200, served(4, forged), 0),
        world.address(5): (200, served(5, world.beat(5, old_epoch, old_seed)), 0),
        world.address(2): (200, b"", 2.0),
    }
    world.report_round(epoch, [1, 2, 4, 5], liar)
    world.jump(epoch + 2)
    watch.poll_once()
    for who in (1, 4, 5):
        assert watch.store.check(epoch, world.address(who))[0] == "unproven"
    assert watch.store.check(epoch, world.address(2))[0] == "pending"
    assert world.challenges(epoch, liar.address) == [] and watch.store.tally() == {}
    world.jump(epoch + 2, offset=world.uptime.epoch_length() - 10)   # the last call
    watch._retry_at.clear()
    endpoint.asked.clear()
    watch.poll_once()
    assert watch.store.check(epoch, world.address(2))[0] == "unproven"
    assert endpoint.asked == [world.address(2)] and watch.examined_epoch == epoch
    [challenge] = world.challenges(epoch, liar.address)
    assert challenge["indices"] == world.indices(1, 2, 4, 5)
    assert challenge["bond"] == watch.bond                   # one bond for up to 256 named
    stake = watch.validators.stake_of(liar.address)
    world.jump(epoch + 4)
    watch.poll_once()
    assert watch.store.tally() == {"resolved": 1}
    assert watch.validators.stake_of(liar.address) == stake - 4 * watch.slash
    watch.close()


def test_d_the_budget_is_shared_and_a_short_bond_names_a_random_part(world, monkeypatch):
    """Many liars at once, or a report naming more than the budget covers, to drain the
    watcher's stake into bonds or fees: (1) two liars name the offline provider 1 and the
    watcher's balance pays one bond (the budget, in answer fees, covers hundreds): one report
    is named (which one: drawn at random), the other is 'capped' (logged once, tried again
    on later passes, never past the balance). (2) A report whose unproven set would risk more
    fees than the budget has left names a random part of it: here the most a beat can cost is
    taken to be half a bond (the watcher's reading of most_paid_per_beat is replaced) and the
    budget one bond, so
    two of the four unproven inclusions are named, for one bond."""
    (l1, _), (l2, _) = world.new_liar(), world.new_liar()
    watch, log = make_watch(world, "w-d")
    bond = watch.bond
    real = watch.bonds.token.balance_of
    offset = real(world.address(WATCHER)) - bond - bond // 2   # one bond and a half
    monkeypatch.setattr(watch.bonds.token, "balance_of", lambda a: real(a) - offset)
    epoch, _ = world.new_epoch()
    world.jump(epoch + 1)
    for liar in (l1, l2):
        world.liar_reports(epoch, [1], liar)
    world.jump(epoch + 2)
    before = stake_balance(world, WATCHER)
    watch.poll_once()
    [challenge] = world.challenges(epoch)
    other = l2 if challenge["validator"] == l1.address else l1
    assert watch.store.challenge(epoch, other.address)["status"] == "capped"
    assert stake_balance(world, WATCHER) == before - watch.bond
    assert log.getvalue().count("liveness-challenge-capped") == 1
    assert "a bond" in log.getvalue()                        # the balance's reason
    assert watch.examined_epoch is None                      # the capped one: tried again
    watch._retry_at.clear()
    watch.poll_once()
    assert len(world.challenges(epoch)) == 1
    assert log.getvalue().count("liveness-challenge-capped") == 1
    world.jump(epoch + 4)                                    # resolved: the lie was caught
    watch.poll_once()
    assert watch.store.challenge(epoch, challenge["validator"])["status"] == "resolved"

    liar, _ = world.new_liar()
    second, log = make_watch(world, "w-d2", max_bonds_lost_per_day=1)
    second.bonds.most_per_beat = bond // 2
    epoch, _ = world.new_epoch()
    world.report_round(epoch, [1, 2, 4, 5], liar)
    world.jump(epoch + 2)
    second.poll_once()
    [challenge] = world.challenges(epoch, liar.address)
    assert len(challenge["indices"]) == 2 and challenge["indices"] < world.indices(1, 2, 4, 5)
    assert second.store.challenge(epoch, liar.address)["bond"] == bond
    line = next(json.loads(x) for x in log.getvalue().splitlines()
                if "liveness-challenge-capped" in x)
    assert (line["named"], line["unproven"]) == (2, 4) and "daily loss budget" in line["reason"]
    assert second.examined_epoch == epoch                    # a part was named: done
    assert second.bonds.at_risk() == bond and second.bonds.budget_spent(epoch)
    watch.close()
    second.close()


def test_share_named_covers_as_many_reports_as_it_can():
    """A bond's worth (per_bond named) to each report in turn, within the budget's named
    slots and the balance's bonds; each share takes ceil(share / per_bond) bonds."""
    assert share_named([3, 1, 2], 10, 10, 1) == [3, 1, 2]
    assert share_named([3, 1, 2], 4, 10, 1) == [2, 1, 1]     # slots short
    assert share_named([3, 1, 2], 10, 4, 1) == [2, 1, 1]     # bonds short
    assert share_named([600, 5], 10_000, 2, 256) == [256, 5]   # a bond each first
    assert share_named([600, 5], 10_000, 3, 256) == [512, 5]
    assert share_named([600, 5], 300, 9, 256) == [295, 5]
    assert share_named([600, 5], 262, 9, 256) == [257, 5]    # one named on a second bond
    assert share_named([600, 5], 200, 9, 256) == [200, 0]    # slots run out on the first
    assert share_named([5], 0, 3, 256) == [0] and share_named([5], 3, 0, 256) == [0]
    assert share_named([], 3, 3, 256) == []


def test_e_restarts_and_front_running(world):
    """The liar front-runs the watcher on provider 5 with a challenge of its own from a second
    address: the watcher reads what is already named and names only provider 1. Then a
    crash between the send and the save (the row left 'sending', the checks lost) and a lost
    database: a restarted watcher finds its challenge on chain and never sends a second one;
    it resolves it once. A fresh database reads the chain from the block that opened the
    oldest epoch still in play, not from the deployment; a look-up from the block that
    opened the challenged epoch."""
    watch, _ = make_watch(world, "w-e")
    epoch, _ = world.new_epoch()
    words = world.report_round(epoch, [1, 5])
    front = Chain(world.network, devnet_account(FRONT))
    StakeToken(front).fund(world.uptime.address, watch.bond, "bond")
    world.jump(epoch + 2)
    Uptime(front).challenge_inclusions(world.liar.address, epoch, words,
                                       liveness.words_of([world.index[5]], world.index[5] + 1))
    before = stake_balance(world, WATCHER)
    watch.scan()                                             # the cursor passes the front run
    watch.store.save_challenge(epoch, world.liar.address, "sending")
    reads = spy_events(watch)
    watch.poll_once()
    opened = world.uptime.opened_block(epoch)
    assert ("InclusionsChallenged", opened) in reads         # the look-up's start
    [ours] = world.challenges(epoch)
    assert ours["indices"] == world.indices(1)
    assert stake_balance(world, WATCHER) == before - watch.bond

    # A crash after the send, before the save: the row says 'sending', the checks are gone.
    key = (epoch, world.liar.address)
    watch.store.save_challenge(*key, "sending", named=[world.index[1]], bond=watch.bond)
    watch.store._db.execute("DELETE FROM checks WHERE epoch=?", (epoch,))
    watch.close()
    again, _ = make_watch(world, "w-e")
    again.poll_once()
    assert again.store.challenge(*key)["status"] == "open"
    assert again.store.challenge(*key)["challenge_id"] == ours["challenge_id"]
    assert len(world.challenges(epoch, challenger=None)) == 2
    again.close()

    # The database lost: everything is read again from the chain.
    for path in (world.home / "w-e").glob("liveness_watch.db*"):
        path.unlink()
    fresh, _ = make_watch(world, "w-e")
    reads = spy_events(fresh)
    fresh.poll_once()
    first = next(b for e in range(epoch - 2, epoch + 3)      # from watched - answer_epochs - 1
                 if (b := world.uptime.opened_block(e)))
    assert min(block for _, block in reads) == first > world.network.deploy_block
    assert fresh.store.challenge(*key)["challenge_id"] == ours["challenge_id"]
    assert fresh.store.challenge(*key)["named"] == [world.index[1]]
    assert len(world.challenges(epoch, challenger=None)) == 2
    assert stake_balance(world, WATCHER) == before - watch.bond
    world.jump(epoch + 4)
    fresh.poll_once()
    fresh.poll_once()
    assert fresh.store.challenge(*key)["status"] == "resolved"
    assert stake_balance(world, WATCHER) == before + fresh.slash * 2_000 // 10_000
    fresh.close()


def test_f_a_griefer_takes_one_bond_and_is_still_watched(world):
    """The griefer's strategy (review finding r2): hold real beats (providers 1, 2, 4, 5 signed
    them: its sybils, beating to it alone), answer the watcher's GET with 404, let it
    challenge, then answer on chain to take the bond. The watcher names all four in one
    challenge (one bond), the griefer answers all four and earns four answer fees (about its
    gas), no more: the rest of the bond comes back to the watcher at once, and the watcher
    counts the four fees as lost. No back-off: on the next epoch the griefer names 2 and 4
    again plus the offline provider 1 (a real lie); all three are named, it answers the two,
    and is slashed for the lie. A watcher that backed off a griefer on known epochs would have
    let that lie through."""
    griefer, _ = world.new_liar()
    watch, log = make_watch(world, "w-f")
    epoch, seed = world.new_epoch()
    world.report_round(epoch, [1, 2, 4, 5], griefer)
    world.uptime.open_epoch()                                # epoch + 1, which it also reports
    next_seed = world.uptime.seed(epoch + 1)
    world.jump(epoch + 2)
    world.uptime.open_epoch()
    world.liar_reports(epoch + 1, [1, 2, 4], griefer)
    before, griefer_before = stake_balance(world, WATCHER), StakeToken(griefer).balance_of(
        griefer.address)
    watch.poll_once()
    [grief] = world.challenges(epoch, griefer.address)
    assert grief["indices"] == world.indices(1, 2, 4, 5)
    world.answer(griefer, grief["challenge_id"], epoch, seed,
                 [devnet_account(w) for w in (1, 2, 4, 5)])
    assert watch.uptime.challenge(grief["challenge_id"])["state"] == 2   # settled at once
    watch.poll_once()                                        # noticed at once, same epoch
    assert watch.store.challenge(epoch, griefer.address)["status"] == "answered"
    assert "liveness-challenge-lost" in log.getvalue()
    fee = watch.bonds.fee
    assert fee == watch.bond // 512 and watch.store.challenge(epoch, griefer.address)["lost"] \
        == 4 * fee
    assert watch.health()["bonds_lost_day"] == round(4 * fee / watch.bond, 6)
    assert stake_balance(world, WATCHER) == before - 4 * fee
    assert StakeToken(griefer).balance_of(griefer.address) == griefer_before + 4 * fee

    world.jump(epoch + 3)
    watch.poll_once()                                        # watches epoch + 1: no back-off
    [lie] = world.challenges(epoch + 1, griefer.address)
    assert lie["indices"] == world.indices(1, 2, 4)
    world.answer(griefer, lie["challenge_id"], epoch + 1, next_seed,
                 [devnet_account(w) for w in (2, 4)])
    stake, mid = watch.validators.stake_of(griefer.address), stake_balance(world, WATCHER)
    world.jump(epoch + 5)
    watch.poll_once()
    assert watch.uptime.challenge(lie["challenge_id"])["state"] == 3
    assert watch.validators.stake_of(griefer.address) == stake - watch.slash
    assert stake_balance(world, WATCHER) == mid + watch.bond - 2 * fee \
        + watch.slash * 2_000 // 10_000
    assert watch.store.tally() == {"answered": 1, "resolved": 1}
    assert watch.store.challenge(epoch + 1, griefer.address)["lost"] == 0   # it earned
    watch.close()


def test_g_the_daily_loss_budget(world):
    """Sybil griefers could each make the watcher pay answer fees: the daily budget stops the
    watcher once what the last day's epochs lost plus what the challenges out may still lose
    (most_paid_per_beat per provider named, as if each showed its own beat alone: the rest of
    a bond always comes back) reach `max_bonds_lost_per_day` bonds; a day of epochs later it
    challenges again. Also the pruning: settled challenges of epochs long past go."""
    liar, endpoint = world.new_liar()
    watch, log = make_watch(world, "w-g", max_bonds_lost_per_day=2)
    bond, fee = watch.bond, watch.bonds.fee
    per_bond = bond // watch.bonds.most_per_beat             # 32 named may lose a bond
    epoch, _ = world.new_epoch()
    world.report_round(epoch, [1], liar)
    world.jump(epoch + 2)
    watch.store.save_challenge(epoch, "0x" + "11" * 20, "answered", 10**6, [1], bond, bond)
    watch.store.save_challenge(epoch, "0x" + "22" * 20, "open", 10**6 + 1,
                               list(range(per_bond)), 2 * bond)
    assert watch.bonds.at_risk() == bond and watch.bonds.room(epoch) == 0
    endpoint.asked.clear()
    watch.bonds.settle = lambda current: None                # keep the fake 'open' row
    watch.poll_once()
    assert world.challenges(epoch, liar.address) == [] and endpoint.asked == []
    assert "liveness-watch-budget-spent" in log.getvalue()
    watch.store._db.execute("DELETE FROM challenges WHERE status='open'")
    assert watch.bonds.room(epoch) == bond                   # 1 lost, nothing out: room
    watch.store.save_challenge(epoch, "0x" + "33" * 20, "resolved", 10**6 + 2, [3], bond,
                               bond - fee + 1)               # a resolved one's loss counts
    assert watch.bonds.room(epoch) == fee - 1 and watch.bonds.budget_spent(epoch)
    later = epoch + watch.bonds.epochs_per_day
    assert watch.bonds.budget_spent(later - 1) and watch.bonds.room(later) == 2 * bond
    watch.store.prune(checks_before=later, challenges_before=later)
    assert watch.store.tally() == {} and watch.store.reports(epoch) == {}
    watch.close()


def test_h_a_bad_endpoint_is_no_beat_and_stops_nothing(world):
    """Review finding r1: a validator publishes an endpoint httpx cannot parse ('http://[::1')
    so that every fetch raised and no challenge or resolve ever happened. Now it is as good as
    no endpoint: its lie is challenged (and the honest validator's URL still asked); and a
    failure in one step of a pass (here: examine) does not stop the resolves."""
    liar, _ = world.new_liar()
    Validators(liar).set_endpoint("http://[::1")
    watch, log = make_watch(world, "w-h")
    epoch, seed = world.new_epoch()
    world.beat_to_honest(2, epoch, seed)
    world.report_round(epoch, [1, 2], liar)
    world.jump(epoch + 2)
    watch.poll_once()
    [challenge] = world.challenges(epoch, liar.address)
    assert challenge["indices"] == world.indices(1)
    assert watch.store.check(epoch, world.address(2))[0] == "beat"
    [detail] = watch.store._all("SELECT detail FROM checks WHERE outcome='unproven'")
    assert "not a plain http(s) URL" in detail[0]

    def broken(epoch, current):
        raise RuntimeError("examine broke")
    watch.examine = broken
    world.jump(epoch + 4)                                    # epoch + 2 to examine: it breaks
    with pytest.raises(RuntimeError):
        watch.poll_once()
    assert watch.uptime.challenge(challenge["challenge_id"])["state"] == 3
    assert "liveness-watch-step-failed" in log.getvalue()
    watch.close()


def test_i_a_silent_validator_is_one_unit_and_the_last_call_waits_for_nobody(world,
                                                                           monkeypatch):
    """Review finding r3, fast: a liar whose endpoint never answers, naming four offline
    providers, with one GET in flight at a time (FETCH_CONCURRENCY=1, as 64 providers at 16).
    A pass is bounded (2 x timeout_s, whatever the queue); once the liar was silent to
    everything it gets one GET a pass, the last call's included: that pass, still bounded,
    decides from its silence and the one challenge naming all four goes out with time to
    spare. The timing rule itself is tested in test_liveness_watch_units.py."""
    monkeypatch.setattr(beat_fetch, "FETCH_CONCURRENCY", 1)
    liar, endpoint = world.new_liar()
    watch, _ = make_watch(world, "w-i", timeout_s=0.3)
    epoch, _ = world.new_epoch()
    endpoint.answers = {world.address(p): (200, b"", 1.5) for p in (1, 2, 4, 5)}
    world.report_round(epoch, [1, 2, 4, 5], liar)
    world.jump(epoch + 2)
    started = time.monotonic()
    watch.poll_once()
    assert time.monotonic() - started < 2.5                  # 2 x 0.3 s of GETs, and reads
    assert 1 <= len(endpoint.asked) <= 2
    assert {watch.store.check(epoch, world.address(p))[0] for p in (1, 2, 4, 5)} == {"pending"}
    assert watch._silent[epoch] == {liar.address}
    endpoint.asked.clear()
    watch._retry_at.clear()
    watch.poll_once()
    assert len(endpoint.asked) == 1                          # one unit: one GET
    endpoint.asked.clear()
    world.jump(epoch + 2, offset=world.uptime.epoch_length() - 15)
    watch._retry_at.clear()
    started = time.monotonic()
    watch.poll_once()
    assert time.monotonic() - started < 2.5 and len(endpoint.asked) == 1
    [challenge] = world.challenges(epoch, liar.address)
    assert challenge["indices"] == world.indices(1, 2, 4, 5)
    assert {watch.store.check(epoch, world.address(p))[0] for p in (1, 2, 4, 5)} == {"unproven"}
    watch.close()


def test_j_reorgs_are_read_again_and_held_indices_never_asked_about(world):
    """The last `confirmations` blocks are scanned again (a reorg may have replaced a report
    there); a provider whose beat the watcher holds is dropped by its registry index, never
    asked about nor checked; the registry is read once an index (validator/registry_indices.py),
    a pass after the first reads none of it."""
    liar, _ = world.new_liar()
    watch, _ = make_watch(world, "w-j", confirmations=50)
    epoch, seed = world.new_epoch()
    watch.beats.add_beat(epoch, world.address(3), world.beat(3, epoch, seed))
    world.report_round(epoch, [3], liar)
    watch.scan()
    assert liar.address in watch.store.reports(epoch)
    watch.store._db.execute("DELETE FROM reports")
    watch.scan()                                             # within 50 blocks: read again
    assert liar.address in watch.store.reports(epoch)
    looked_up = []
    registry = watch.indices.registry
    real = registry.provider_at
    registry.provider_at = lambda index, **at: looked_up.append(index) or real(index, **at)
    world.jump(epoch + 2)
    watch.poll_once()
    assert watch.store.check(epoch, world.address(3)) is None and watch.examined_epoch == epoch
    assert world.challenges(epoch, liar.address) == []
    assert len(looked_up) == len(set(looked_up))             # each index read once at most
    read = len(looked_up)
    watch.examine(epoch, world.uptime.current_epoch())
    assert len(looked_up) == read
    watch.close()


def test_k_twenty_decoys_shield_no_lie(world, decoys):
    """The decoy shield (the reason for Uptime.challenge_inclusions): the liar names DECOYS
    (20) registered providers whose beats it holds and answers on chain but refuses over
    HTTP (404), plus the offline provider 1 (the lie). Before, a watcher limited to a few
    bonds an epoch mostly challenged decoys and lost those bonds to the liar; the lie
    escaped with chance d/(d + 1). Now the honest watcher's single pass names all 21 in ONE
    challenge for ONE bond (challenge_bond_for(21)); the liar answers the 20 decoys on chain
    (earning the fixed answer fee for each, about its gas), the lie stays unanswered;
    resolved, the liar is slashed inclusion_slash once, the watcher gets back bond - paid +
    20 % of the slash, and at finality the lie's bit is revoked while the decoys stay up.

    What the liar can still do: make the watcher pay an answer fee per decoy when it lies
    nowhere (test_f), within the daily budget (test_d, test_g); each decoy costs it a
    registered, staked provider and an answer's gas every epoch, which the fee only repays."""
    liar, endpoint = world.new_liar()
    watch, _ = make_watch(world, "w-k")
    epoch, seed = world.new_epoch()
    world.jump(epoch + 1)
    world.liar_reports(epoch, [1], liar, extra=[index for _, index in decoys])
    world.jump(epoch + 2)
    before, liar_before = stake_balance(world, WATCHER), StakeToken(liar).balance_of(
        liar.address)
    watch.poll_once()
    assert len(endpoint.asked) == DECOYS + 1                 # one pass asked about all
    [challenge] = world.challenges(epoch, liar.address)
    assert challenge["indices"] == world.indices(1) | {index for _, index in decoys}
    assert challenge["bond"] == watch.uptime.challenge_bond_for(DECOYS + 1) == watch.bond
    assert stake_balance(world, WATCHER) == before - watch.bond
    world.answer(liar, challenge["challenge_id"], epoch, seed, [a for a, _ in decoys])
    paid = DECOYS * watch.uptime.answer_fee()
    assert StakeToken(liar).balance_of(liar.address) == liar_before + paid
    stake = watch.validators.stake_of(liar.address)
    world.jump(epoch + 3)
    watch.poll_once()                                        # answer window: still open
    assert watch.uptime.challenge(challenge["challenge_id"])["state"] == 1
    world.jump(epoch + 4)
    watch.poll_once()
    assert watch.uptime.challenge(challenge["challenge_id"])["state"] == 3
    assert watch.validators.stake_of(liar.address) == stake - watch.slash
    assert stake_balance(world, WATCHER) == before - paid + watch.slash * 2_000 // 10_000
    assert watch.store.challenge(epoch, liar.address)["lost"] == 0
    assert watch.uptime.is_final(epoch)
    assert not watch.uptime.is_up(world.address(1), epoch)
    assert all(watch.uptime.is_up(a.address, epoch) for a, _ in decoys)
    watch.close()


def test_m_a_liar_front_running_with_its_decoys_only_keeps_the_lie_named(world, decoys):
    """The liar's counter: challenge its own decoys first (from a second address, answering
    them itself: it loses only gas, the fees coming to it and the rest of the bond back to
    its second address), so that the watcher's challenge is refused or names decoys only.
    Half the decoys are named by the front-runner, five of them answered before the watcher's
    pass: the watcher leaves those five out (proven_word: their beats exist, naming them
    would only take budget). Its read of what is named is made stale (as if the front-run
    landed between its read and its send), so it sends the other five taken decoys too: the
    contract leaves them out (never refuses the set) and names the ten untaken decoys and the
    lie, which the watcher records from the event. The liar answers every decoy, and is
    slashed for the lie once."""
    liar, _ = world.new_liar()
    watch, _ = make_watch(world, "w-m")
    epoch, seed = world.new_epoch()
    world.jump(epoch + 1)
    words = world.liar_reports(epoch, [1], liar, extra=[index for _, index in decoys])
    first, rest = decoys[:DECOYS // 2], decoys[DECOYS // 2:]
    front = Chain(world.network, devnet_account(FRONT))
    StakeToken(front).fund(world.uptime.address, watch.bond, "bond")
    world.jump(epoch + 2)
    taken = [index for _, index in first]
    Uptime(front).challenge_inclusions(liar.address, epoch, words,
                                       liveness.words_of(taken, max(taken) + 1))
    [theirs] = world.challenges(epoch, liar.address, challenger=FRONT)
    world.answer(liar, theirs["challenge_id"], epoch, seed, [a for a, _ in first[:5]])
    watch.bonds.uptime.challenged_word = lambda validator, at, j: 0   # stale
    sends = []
    send = watch.bonds.uptime.challenge_inclusions
    watch.bonds.uptime.challenge_inclusions = lambda *a: sends.append(a[3]) or send(*a)
    watch.poll_once()
    lie_and_rest = world.indices(1) | {index for _, index in rest}
    [sent] = sends                                           # one send, never refused
    assert set(liveness.indices_of(sent)) == lie_and_rest | {i for _, i in first[5:]}
    [ours] = world.challenges(epoch, liar.address)
    assert ours["indices"] == lie_and_rest and ours["named_count"] == 1 + len(rest)
    assert set(watch.store.challenge(epoch, liar.address)["named"]) == lie_and_rest
    world.answer(liar, theirs["challenge_id"], epoch, seed, [a for a, _ in first[5:]])
    world.answer(liar, ours["challenge_id"], epoch, seed, [a for a, _ in rest])
    assert watch.uptime.challenge(theirs["challenge_id"])["state"] == 2
    stake = watch.validators.stake_of(liar.address)
    world.jump(epoch + 4)
    watch.poll_once()
    assert watch.uptime.challenge(ours["challenge_id"])["state"] == 3
    assert watch.validators.stake_of(liar.address) == stake - watch.slash
    assert not watch.uptime.is_up(world.address(1), epoch)
    watch.close()


def test_l_the_last_call_leaves_nothing_unasked_pending(world, monkeypatch):
    """Review 2, finding 5: a provider the per-pass bounds left unasked in the last call was
    saved 'pending' and never challenged (a liar naming more offline providers than one
    pass asks about kept the rest safe). Now, in the last call, unasked is no beat: one GET
    a validator a pass here, two lies, both named."""
    monkeypatch.setattr(liveness_watch, "MAX_ASKS_PER_VALIDATOR", 1)
    liar, endpoint = world.new_liar()
    watch, _ = make_watch(world, "w-l", timeout_s=0.3)
    epoch, _ = world.new_epoch()
    world.report_round(epoch, [1, 4], liar)
    world.jump(epoch + 2, offset=world.uptime.epoch_length() - 15)   # the last call
    watch.poll_once()
    assert len(endpoint.asked) == 1 and watch.examined_epoch == epoch
    [challenge] = world.challenges(epoch, liar.address)
    assert challenge["indices"] == world.indices(1, 4)
    watch.close()


def test_the_removed_per_epoch_cap_is_named_in_the_error():
    """`watch_max_challenges_per_epoch` meant bonds on one reported epoch; with one challenge
    per report it bounds nothing the daily budget does not, and an old config says so."""
    with pytest.raises(SpecError, match="watch_max_challenges_per_epoch was removed"):
        parse_toml_model(LivenessSection, "watch_max_challenges_per_epoch = 8\n", "v.toml")
    assert parse_toml_model(LivenessSection, "watch_max_bonds_lost_per_day = 3\n",
                            "v.toml").watch_max_bonds_lost_per_day == 3


def test_an_old_database_is_rebuilt(tmp_path):
    """A liveness_watch.db of the per-provider challenges (no user_version) is dropped and
    rebuilt: everything in it is read again from the chain (the new contract's events)."""
    path = tmp_path / "liveness_watch.db"
    old = sqlite3.connect(path)
    old.execute("CREATE TABLE challenges (epoch INTEGER, validator TEXT, provider TEXT, "
                "status TEXT, challenge_id INTEGER, detail TEXT, "
                "PRIMARY KEY (epoch, validator, provider))")
    old.execute("INSERT INTO challenges VALUES (1, '0xv', '0xp', 'open', 3, '')")
    old.execute("CREATE TABLE cursor (name TEXT PRIMARY KEY, next_block INTEGER NOT NULL)")
    old.execute("INSERT INTO cursor VALUES ('reports', 99)")
    old.commit()
    old.close()
    store = WatchStore(path)
    assert store.tally() == {} and store.next_block() is None
    store.save_challenge(1, "0xv", "open", 3, [7, 5], 10**19)
    assert store.challenge(1, "0xv")["named"] == [5, 7] and store.named_out() == 2
    store.close()
    again = WatchStore(path)                                 # the new layout is kept
    assert again.challenge(1, "0xv")["bond"] == 10**19
    again.close()


def test_beat_problem_takes_the_providers_signature_only():
    """The pure check (protocol.liveness.beat_problem): the provider's own signature over the
    epoch's seed, its high-s twin included (anyone can turn it into the low-s form the
    contract takes); not another provider, epoch, seed or key."""
    provider, other = Account.create(), Account.create()
    uptime, seed = "0x" + "11" * 20, b"\x05" * 32
    good = liveness.sign_beat(provider, 31337, uptime, 7, seed)

    def problem(signature, who=provider.address, epoch=7):
        served = liveness.SignedBeat(provider=who, epoch=epoch, signature=signature)
        return liveness.beat_problem(31337, uptime, provider.address, 7, seed, served)

    raw = bytes.fromhex(good[2:])
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    twin = raw[:32] + (n - int.from_bytes(raw[32:64], "big")).to_bytes(32, "big") \
        + bytes([55 - raw[64]])
    assert problem(good) is None and problem("0x" + twin.hex()) is None
    assert "names provider" in problem(good, who=other.address)
    assert "names provider" in problem(good, epoch=8)
    assert "signed by" in problem(liveness.sign_beat(provider, 31337, uptime, 7, b"\x06" * 32))
    assert "signed by" in problem(liveness.sign_beat(other, 31337, uptime, 7, seed))
    assert "signed by" in problem("0x" + "00" * 65)
