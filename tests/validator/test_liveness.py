"""The validator's liveness duty in process (validator/liveness.py) against a real anvil: what
`POST /liveness/beat` refuses and why (never a 500), the receipt it signs, the beats it keeps
across a restart, the one report per epoch (never twice, a lost save included), and the
answers to inclusion challenges of its reports (one challenge names a set of inclusions: the
duty shows every held, unproven named beat in batches of MAX_ANSWERS, each paid the fixed
answer fee; a batch wholly shown meanwhile by the providers is done, one partly shown lands
for the rest; it resolves nothing, since the rest of a bond goes back to the challenger);
reorgs (faked with evm_snapshot / evm_revert): a seed counts only once `confirmations` deep,
and the challenge scan reads its last `confirmations` blocks again; pruning of liveness.db;
the paged GET /liveness/{epoch} and GET of one beat. Chain time is moved block by block
(evm_setNextBlockTimestamp), so the module waits for nothing. The daemons end to end:
tests/e2e/test_liveness.py."""

from __future__ import annotations

import io
import time

import pytest
from eth_account import Account
from eth_keys.constants import SECPK1_N
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry
from tests.support.anvil import mine, rpc
from web3 import Web3

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain
from tessera.chain.registry import ProviderRegistry
from tessera.chain.tokens import StakeToken
from tessera.chain.uptime import Uptime
from tessera.chain.validators import Validators
from tessera.http_limits import RequestGuard
from tessera.logs import EventLog
from tessera.protocol import liveness, messages
from tessera.provider.node import WATCHED, LogFeed
from tessera.validator.api import STREAMED
from tessera.validator.liveness import (
    MAX_PAGE,
    REFRESH_EVERY_S,
    LivenessDuty,
    liveness_routes,
)
from tessera.validator.liveness_store import (
    PRUNE_MARGIN_EPOCHS,
    LivenessStore,
    prune_before,
)
from tessera.validator.stake import ensure_validator

VALIDATOR, PROVIDER, IDLE, CHALLENGER = 7, 3, 4, 9
OTHERS = (5, 6)    # two more providers: a challenge naming three of the validator's inclusions
COLLEAGUE = 8      # a second validator
BOND = 10 * 10**18   # the devnet's challenge_bond
STAKE = 100 * 10**18


@pytest.fixture(scope="module")
def world(tmp_path_factory, private_devnet):
    home = tmp_path_factory.mktemp("liveness")
    with private_devnet(home) as (_, network):
        for account in (PROVIDER, IDLE, *OTHERS):
            ProviderRegistry(Chain(network, devnet_account(account))).register(
                STAKE, "CPU", 1, 1024, 1, "http://127.0.0.1:9", 1)
        chain = Chain(network, devnet_account(VALIDATOR))
        ensure_validator(chain, STAKE, "http://127.0.0.1:9")
        yield home, network, chain


def make_duty(world, open_epochs: bool = True,
              confirmations: int = 0) -> tuple[LivenessDuty, io.StringIO, TestClient]:
    home, _, chain = world
    stream = io.StringIO()
    duty = LivenessDuty(chain, devnet_account(VALIDATOR), home / "state", EventLog("t", stream),
                        CollectorRegistry(), open_epochs=open_epochs, open_within_s=0,
                        confirmations=confirmations)
    duty.prepare()
    app = FastAPI()
    app.add_middleware(RequestGuard, streamed=STREAMED)
    app.include_router(liveness_routes(duty))
    return duty, stream, TestClient(app, raise_server_exceptions=False)


def next_epoch(uptime: Uptime) -> int:
    epoch = uptime.current_epoch() + 1
    w3 = uptime.chain.w3
    w3.provider.make_request("evm_setNextBlockTimestamp", [uptime.genesis() + epoch * 60])
    w3.provider.make_request("evm_mine", [])
    return epoch


def beat_body(account, uptime: Uptime, epoch: int, seed: bytes, provider: str | None = None) -> dict:
    signature = liveness.sign_beat(account, uptime.chain.network.chain_id, uptime.address,
                                   epoch, seed)
    return {"provider": provider or account.address, "epoch": epoch, "signature": signature}


def high_s(signature: str) -> str:
    """The malleated twin of a signature: the same signer to eth_account, refused on chain."""
    raw = bytes.fromhex(signature[2:])
    s = SECPK1_N - int.from_bytes(raw[32:64], "big")
    return "0x" + (raw[:32] + s.to_bytes(32, "big") + bytes([55 - raw[64]])).hex()


def test_junk_beats_get_4xx_and_a_good_one_a_receipt_kept_across_a_restart(world):
    _, network, chain = world
    duty, _, client = make_duty(world, open_epochs=False)
    uptime = duty.uptime
    epoch = next_epoch(uptime)
    duty.poll_once()
    provider = devnet_account(PROVIDER)

    def post(body, **kw):
        return client.post("/liveness/beat", json=body, **kw)

    early = post(beat_body(provider, uptime, epoch, bytes(32)))
    assert early.status_code == 425 and "seed is not set" in early.json()["detail"]
    Uptime(Chain(network, devnet_account(IDLE))).open_epoch()
    time.sleep(REFRESH_EVERY_S)   # the duty reads a zero seed again at most this often
    seed = uptime.seed(epoch)
    assert seed != bytes(32)
    good = beat_body(provider, uptime, epoch, seed)
    stranger = Account.create()
    refusals = [
        (post({"provider": provider.address}), 422, "not a SignedBeat"),
        (client.post("/liveness/beat", content=b"{not json"), 422, "SignedBeat"),
        (client.post("/liveness/beat", content=b"[" * 5000), 413, "larger than"),
        (post({**good, "epoch": epoch + 1}), 409, "current epoch"),
        (post({**good, "epoch": epoch - 1}), 409, "current epoch"),
        (post(beat_body(provider, uptime, epoch, b"\x01" * 32)), 403, "bad signature"),
        (post(beat_body(stranger, uptime, epoch, seed, provider.address)), 403, "bad signature"),
        (post({**good, "signature": high_s(good["signature"])}), 403, "upper half"),
        (post(beat_body(stranger, uptime, epoch, seed)), 403, "not registered"),
        (post({**good, "extra": 1}), 422, "extra"),
    ]
    for reply, status, words in refusals:
        assert (reply.status_code, words in reply.text) == (status, True), reply.text
    reply = post(good)
    assert reply.status_code == 200, reply.text
    receipt = liveness.BeatReceipt.model_validate(reply.json())
    typed = liveness.receipt_typed_data(network.chain_id, uptime.address, provider.address,
                                        chain.address, epoch)
    assert messages.recover(typed, receipt.signature) == chain.address
    assert (receipt.provider, receipt.validator, receipt.epoch) == \
        (provider.address, chain.address, epoch)
    assert post(good).json() == reply.json()                 # a repeat: the same receipt
    duty.close()

    again, _, client = make_duty(world)                      # a restart: the beat is kept
    assert again.store.providers(epoch) == [provider.address]
    assert client.get(f"/liveness/{epoch}").json()["providers"] == [provider.address]
    again.close()


def test_one_report_per_epoch_is_final_and_an_inclusion_challenge_is_answered(world):
    _, network, chain = world
    duty, log, client = make_duty(world)
    uptime = duty.uptime
    epoch = next_epoch(uptime)
    duty.poll_once()                                         # sees the epoch
    duty.poll_once()                                         # opens it (open_within_s=0)
    seed = uptime.seed(epoch)
    assert seed != bytes(32) and "epoch-opened" in log.getvalue()
    provider = devnet_account(PROVIDER)
    assert client.post("/liveness/beat", json=beat_body(provider, uptime, epoch, seed)).status_code == 200

    next_epoch(uptime)
    duty.poll_once()
    [report] = chain.events("Uptime", "LivenessReported", network.deploy_block,
                            argument_filters={"epoch": epoch})
    index = ProviderRegistry(chain).index_of(provider.address)
    words = list(report["args"]["words"])
    assert report["args"]["validator"] == chain.address
    assert liveness.indices_of(words) == [index]
    assert duty.store.report(epoch)["status"] == "posted"
    duty.poll_once()                                         # nothing more to send
    duty.store._do("DELETE FROM reports WHERE epoch=?", (epoch,))   # a save lost in a crash
    duty.poll_once()
    assert duty.store.report(epoch)["detail"].startswith("found on chain")
    assert len(chain.events("Uptime", "LivenessReported", network.deploy_block,
                            argument_filters={"epoch": epoch})) == 1

    # Anyone challenges the inclusion; the duty answers with the beat it holds.
    challenger = Chain(network, devnet_account(CHALLENGER))
    StakeToken(challenger).fund(uptime.address, BOND, "challenge bond")
    _, challenge_id = Uptime(challenger).challenge_inclusions(chain.address, epoch, words, words)
    duty._scan_at = 0
    duty.poll_once()
    assert uptime.challenge(challenge_id)["state"] == 2      # answered
    assert "liveness-challenge-answered" in log.getvalue()

    # Final once report_delay + 1 + answer_epochs more epochs have ended: up by the report
    # alone (no heartbeat), and the provider that sent nothing is down.
    report_delay, answer_epochs = uptime.liveness_rules()
    while not uptime.is_final(epoch):
        assert uptime.is_up(devnet_account(IDLE).address, epoch)   # not final: presumed up
        next_epoch(uptime)
    assert uptime.current_epoch() == liveness.answer_end(epoch, report_delay, answer_epochs) + 1
    assert uptime.is_up(provider.address, epoch) and not uptime.beats(provider.address, epoch)
    assert not uptime.is_up(devnet_account(IDLE).address, epoch)
    duty.poll_once()                                         # past every window: nothing to do
    duty.close()


def test_a_seed_counts_only_once_it_is_confirmations_deep_so_a_reorg_cannot_strand_beats(world):
    """The seed is the hash of the block before open_epoch's. Adversary (or plain bad luck): a
    reorg re-mines the open in another block, so the seed changes; had the validator receipted
    beats over the first seed, every one of them would be unanswerable when challenged (the
    challenger takes the slash) and unclaimable. So beats are refused (425) until the block that
    set the seed is `confirmations` deep; a beat over the reorged-away seed is refused (403);
    the beat over the seed that stuck is receipted."""
    _, network, _ = world
    duty, _, client = make_duty(world, open_epochs=False, confirmations=3)
    uptime, provider = duty.uptime, devnet_account(PROVIDER)
    epoch = next_epoch(uptime)
    duty.poll_once()

    def post(seed):
        duty._read_at.clear()                 # no REFRESH_EVERY_S wait between the reads
        return client.post("/liveness/beat", json=beat_body(provider, uptime, epoch, seed))

    snapshot = rpc(duty.chain, "evm_snapshot")
    Uptime(Chain(network, devnet_account(IDLE))).open_epoch()
    first = uptime.seed(epoch)
    assert first != bytes(32)
    early = post(first)
    assert early.status_code == 425 and "not yet 3 blocks deep" in early.json()["detail"]
    assert rpc(duty.chain, "evm_revert", snapshot) is True      # the reorg: the open is undone
    mine(duty.chain, 1)                                         # and lands a block later
    receipt = Uptime(Chain(network, devnet_account(IDLE))).open_epoch()
    second = uptime.seed(epoch)
    assert second not in (first, bytes(32))
    mine(duty.chain, 1)
    assert post(second).status_code == 425                      # 2 blocks deep: not yet
    assert mine(duty.chain, 1) == receipt["blockNumber"] + 2
    assert post(second).status_code == 425
    mine(duty.chain, 1)                                         # 3 deep
    stale = post(first)
    assert stale.status_code == 403 and "bad signature" in stale.text
    good = post(second)
    assert good.status_code == 200, good.text
    assert duty.store.beat(epoch, provider.address) is not None
    duty.close()


def test_the_challenge_scan_reads_its_last_blocks_again_after_a_reorg(world):
    """Adversary: a challenge that a reorg puts in a block the scan has already passed (the
    scan's cursor stays past it) would never be answered, and the validator would be slashed
    for a beat it holds. So each scan reads the last `confirmations` blocks again; a challenge
    there that was answered is checked on chain again, and answered again when a reorg dropped
    the answer. Also: a beat in the last epoch a challenge can be made is still held when the
    answer window ends (pruning keeps it)."""
    _, network, chain = world
    duty, log, client = make_duty(world, confirmations=4)
    uptime, provider = duty.uptime, devnet_account(PROVIDER)
    epoch = next_epoch(uptime)
    duty.poll_once()
    duty.poll_once()                                            # opens it
    mine(chain, 4)
    duty._read_at.clear()
    beat = client.post("/liveness/beat", json=beat_body(provider, uptime, epoch,
                                                         uptime.seed(epoch)))
    assert beat.status_code == 200, beat.text
    next_epoch(uptime)
    duty.poll_once()                                            # the report
    words = duty.store.report(epoch)["words"]
    report_delay, answer_epochs = uptime.liveness_rules()
    while uptime.current_epoch() < epoch + report_delay + 1:   # the last challenge epoch:
        next_epoch(uptime)                                      # the challenger waits

    challenger = Chain(network, devnet_account(CHALLENGER))
    StakeToken(challenger).fund(uptime.address, BOND, "challenge bond")
    current = uptime.current_epoch()
    duty.answer_challenges(current)
    snapshot = rpc(chain, "evm_snapshot")
    passed = mine(chain, 3)
    duty.answer_challenges(current)                             # the cursor passes 3 blocks
    assert duty.store.next_block(0) == passed + 1
    assert rpc(chain, "evm_revert", snapshot) is True           # the reorg
    _, challenge_id = Uptime(challenger).challenge_inclusions(chain.address, epoch, words,
                                                              words)
    assert mine(chain, 1) < passed                              # the challenge is behind it
    before_answer = rpc(chain, "evm_snapshot")
    duty.answer_challenges(current)
    assert uptime.challenge(challenge_id)["state"] == 2         # answered
    assert duty.store.answer_status(challenge_id) == "answered"

    # A reorg drops the answer: the challenge is open again, its log in the re-read blocks.
    assert rpc(chain, "evm_revert", before_answer) is True
    chain._reset_nonce()                                        # the answer's nonce is free again
    assert uptime.challenge(challenge_id)["state"] == 1
    duty.answer_challenges(current)
    assert uptime.challenge(challenge_id)["state"] == 2
    assert log.getvalue().count("liveness-challenge-answered") == 2
    duty.answer_challenges(current)                             # read again, nothing to send
    assert log.getvalue().count("liveness-challenge-answered") == 2

    # The answer window's last epoch: pruning keeps the beat that answers it.
    while uptime.current_epoch() < liveness.answer_end(epoch, report_delay, answer_epochs):
        next_epoch(uptime)
    duty.poll_once()
    assert duty.store.beat(epoch, provider.address) is not None
    duty.close()


def reported_epoch(world, accounts) -> tuple[LivenessDuty, io.StringIO, int, list[int]]:
    """A fresh duty that receipted the beats of `accounts` in a new epoch and reported them:
    (duty, its log, the epoch, the report's words)."""
    _, network, chain = world
    duty, log, client = make_duty(world)
    uptime = duty.uptime
    epoch = next_epoch(uptime)
    duty.poll_once()
    duty.poll_once()                                         # opens it
    for account in accounts:
        body = beat_body(devnet_account(account), uptime, epoch, uptime.seed(epoch))
        assert client.post("/liveness/beat", json=body).status_code == 200
    next_epoch(uptime)
    duty.poll_once()                                         # the report
    [report] = chain.events("Uptime", "LivenessReported", network.deploy_block,
                            argument_filters={"epoch": epoch, "validator": chain.address})
    return duty, log, epoch, list(report["args"]["words"])


def named(chain: Chain, accounts) -> list[int]:
    registry = ProviderRegistry(chain)
    return liveness.words_of([registry.index_of(devnet_account(a).address) for a in accounts],
                             registry.provider_count())


def challenger_of(network) -> Uptime:
    challenger = Chain(network, devnet_account(CHALLENGER))
    StakeToken(challenger).fund(Uptime(challenger).address, 3 * BOND, "challenge bonds")
    return Uptime(challenger)


def test_a_challenge_naming_three_inclusions_is_answered_in_one_batch_for_the_fees(world):
    """The validator shows the three named beats in one answer_challenge and is paid the fixed
    answer fee for each (about its gas), nothing more: the rest of the bond goes back to the
    challenger at once. Adversary: a challenger betting the validator answers one inclusion a
    transaction (and gives up on gas, or runs out of time) gains nothing: one transaction
    answers up to MAX_ANSWERS; and a validator hoping to earn by being challenged earns only
    the fees."""
    _, network, chain = world
    accounts = (PROVIDER, *OTHERS)
    duty, log, epoch, words = reported_epoch(world, accounts)
    assert duty.answers.max_answers == 64                    # Uptime.MAX_ANSWERS, read once
    challenger = challenger_of(network)
    _, challenge_id = challenger.challenge_inclusions(chain.address, epoch, words,
                                                      named(chain, accounts))
    token = StakeToken(chain)
    before, challenger_before = (token.balance_of(chain.address),
                                 token.balance_of(challenger.chain.address))
    duty.answer_challenges(duty.uptime.current_epoch())
    shown = chain.events("Uptime", "InclusionAnswered", network.deploy_block,
                         argument_filters={"challenge_id": challenge_id})
    assert sorted(e["args"]["provider"] for e in shown) == \
        sorted(devnet_account(a).address for a in accounts)
    assert {e["transactionHash"] for e in shown} == {shown[0]["transactionHash"]}   # one tx
    assert {e["args"]["answered_by"] for e in shown} == {chain.address}
    fee = duty.uptime.answer_fee()
    assert fee == BOND // 512 and {e["args"]["to_answerer"] for e in shown} == {fee}
    [resolved] = chain.events("Uptime", "ChallengeResolved", network.deploy_block,
                              argument_filters={"challenge_id": challenge_id})
    assert (resolved["args"]["unanswered"], resolved["args"]["bond_returned"]) == (0, BOND - 3 * fee)
    assert token.balance_of(chain.address) - before == 3 * fee
    assert token.balance_of(challenger.chain.address) - challenger_before == BOND - 3 * fee
    assert duty.uptime.challenge(challenge_id)["state"] == liveness.CHALLENGE_ANSWERED
    assert duty.store.answer_status(challenge_id) == "answered"
    assert "liveness-challenge-answered" in log.getvalue()
    duty.close()


def test_providers_answering_first_never_cost_the_validator_a_batch(world, monkeypatch):
    """Providers answer their own inclusions first (as they should: their epochs are at
    stake), landing between the validator's read of the proven words and its sends (made
    stale here). Batches are MAX_ANSWERS (2 here) beats: the first, both of whose beats were
    shown meanwhile, is refused ("every beat given was shown already") and simply done; the
    second, one of whose two was shown, lands and shows the other (the shown one skipped,
    unpaid). Adversary: anyone copying a batch's calldata and sending one of its beats first
    (to void the batch, as under the old contract, where one shown beat reverted all of it):
    that only skips the beat."""
    _, network, chain = world
    accounts = (PROVIDER, IDLE, *OTHERS)
    duty, log, epoch, words = reported_epoch(world, accounts)
    uptime = challenger_of(network)
    _, challenge_id = uptime.challenge_inclusions(chain.address, epoch, words,
                                                  named(chain, accounts))
    registry = ProviderRegistry(chain)
    ordered = sorted((devnet_account(a) for a in accounts),
                     key=lambda a: registry.index_of(a.address))
    for account in ordered[:3]:                              # both of batch 1, one of batch 2
        signature = duty.store.beat(epoch, account.address)
        Uptime(Chain(network, account)).answer_challenge(challenge_id, [account.address],
                                                         [bytes.fromhex(signature[2:])])
    duty.answers._max_answers = 2
    monkeypatch.setattr(duty.uptime, "proven_word", lambda e, j: 0)   # stale reads
    token = StakeToken(chain)
    before = token.balance_of(chain.address)
    duty.answer_challenges(duty.uptime.current_epoch())
    assert "shown already" not in log.getvalue()             # no refusal logged: nothing lost
    shown = chain.events("Uptime", "InclusionAnswered", network.deploy_block,
                         argument_filters={"challenge_id": challenge_id})
    [mine] = [e for e in shown if e["args"]["answered_by"] == chain.address]
    assert len(shown) == 4 and mine["args"]["provider"] == ordered[3].address
    assert token.balance_of(chain.address) - before == duty.uptime.answer_fee()
    assert duty.uptime.challenge(challenge_id)["state"] == liveness.CHALLENGE_ANSWERED
    assert duty.store.answer_status(challenge_id) == "answered"
    duty.close()


def test_a_colleagues_challenge_is_answered_for_the_beats_this_validator_holds(world):
    """P beat to this validator and to a colleague, then went offline. The colleague's report
    is challenged naming P (by a griefer, or the colleague lies elsewhere and leaves it
    unanswered): a disputed inclusion never proven revokes P's bit of the epoch whatever other
    reports say, so this validator shows P's beat there (and is paid the answer fee).
    A challenge naming only providers it did not report is not followed at all."""
    _, network, chain = world
    p, q = PROVIDER, OTHERS[0]
    duty, log, epoch, words = reported_epoch(world, (p,))
    colleague = Chain(network, devnet_account(COLLEAGUE))
    ensure_validator(colleague, STAKE, "http://127.0.0.1:9")
    theirs = named(chain, [p, q])
    Uptime(colleague).report_liveness(epoch, theirs)
    uptime = challenger_of(network)
    _, only_q = uptime.challenge_inclusions(colleague.address, epoch, theirs, named(chain, [q]))
    _, cid = uptime.challenge_inclusions(colleague.address, epoch, theirs, named(chain, [p]))
    token = StakeToken(chain)
    before = token.balance_of(chain.address)
    duty.answer_challenges(duty.uptime.current_epoch())
    [shown] = chain.events("Uptime", "InclusionAnswered", network.deploy_block,
                           argument_filters={"challenge_id": cid})
    assert (shown["args"]["provider"], shown["args"]["answered_by"]) == (
        devnet_account(p).address, chain.address)
    assert duty.uptime.challenge(cid)["state"] == liveness.CHALLENGE_ANSWERED
    assert token.balance_of(chain.address) - before == shown["args"]["to_answerer"] > 0
    assert duty.store.answer_status(only_q) is None          # nothing of ours named there
    assert "liveness-colleague-challenged" in log.getvalue()
    assert duty.store.answer_status(cid) == "answered"        # settled by its answer: closed
    assert duty.store.open_answers() == []
    duty.close()


def test_beats_shown_elsewhere_are_left_for_anyone_to_settle_and_a_lost_one_is_not(world):
    """P's beat is shown first on a challenge of a colleague's report (same epoch): it is not
    shown again, so the challenge naming P and Q on this validator's report stays open after
    its batch (Q). Once the window is over the duty closes it here without a transaction:
    resolving it would only hand the challenger its bond less Q's fee back (nothing for the
    validator), and no slash can come of a set whose every beat was shown; the challenger's
    resolve settles it as answered. A challenge naming R, whose beat the validator lost, is
    answered by nobody: the duty logs it and never resolves it (that would slash itself);
    the challenger does, and the duty records the slash."""
    _, network, chain = world
    p, q, r = PROVIDER, *OTHERS
    duty, log, epoch, words = reported_epoch(world, (p, q, r))
    colleague = Chain(network, devnet_account(COLLEAGUE))
    ensure_validator(colleague, STAKE, "http://127.0.0.1:9")
    Uptime(colleague).report_liveness(epoch, named(chain, [p]))
    uptime = challenger_of(network)
    _, elsewhere = uptime.challenge_inclusions(colleague.address, epoch, named(chain, [p]),
                                               named(chain, [p]))
    provider = Chain(network, devnet_account(p))
    signature = duty.store.beat(epoch, provider.address)
    Uptime(provider).answer_challenge(elsewhere, [provider.address],
                                      [bytes.fromhex(signature[2:])])
    _, mixed = uptime.challenge_inclusions(chain.address, epoch, words, named(chain, [p, q]))
    _, lost = uptime.challenge_inclusions(chain.address, epoch, words, named(chain, [r]))
    duty.store._do("DELETE FROM beats WHERE epoch=? AND provider=?",
                   (epoch, devnet_account(r).address))      # a lost database
    duty.answer_challenges(duty.uptime.current_epoch())
    assert duty.uptime.challenge(mixed)["answered"] == 1     # Q; P is proven already
    assert duty.store.open_answers() == [(mixed, epoch), (lost, epoch)]
    assert "liveness-challenge-unanswerable" in log.getvalue()

    report_delay, answer_epochs = duty.uptime.liveness_rules()
    while duty.uptime.current_epoch() <= liveness.answer_end(epoch, report_delay, answer_epochs):
        next_epoch(duty.uptime)
    token, stake = StakeToken(chain), Validators(chain).stake_of(chain.address)
    before, sent = token.balance_of(chain.address), chain.w3.eth.get_transaction_count(
        chain.address)
    duty.answers._check_at.clear()                           # no WAITING_CHECK_S wait
    duty.answer_challenges(duty.uptime.current_epoch())
    assert chain.w3.eth.get_transaction_count(chain.address) == sent   # nothing sent
    assert token.balance_of(chain.address) == before
    assert duty.uptime.challenge(mixed)["state"] == liveness.CHALLENGE_OPEN   # not by us
    assert duty.uptime.challenge(lost)["state"] == liveness.CHALLENGE_OPEN
    assert (duty.store.answer_status(mixed), duty.store.answer_status(lost)) == \
        ("answered", "open")
    assert "liveness-challenge-unanswered" in log.getvalue()
    assert Validators(chain).stake_of(chain.address) == stake
    fee = duty.uptime.answer_fee()
    uptime.resolve_challenge(mixed)                          # the challenger's: its bond back
    [resolved] = chain.events("Uptime", "ChallengeResolved", network.deploy_block,
                              argument_filters={"challenge_id": mixed})
    assert (resolved["args"]["unanswered"], resolved["args"]["bond_returned"]) == (0, BOND - fee)
    uptime.resolve_challenge(lost)                           # the challenger's resolve
    duty.answers._check_at.clear()
    duty.answer_challenges(duty.uptime.current_epoch())
    assert duty.store.answer_status(lost) == "resolved" and duty.store.open_answers() == []
    _, inclusion_slash = duty.uptime.challenge_rules()
    assert Validators(chain).stake_of(chain.address) == stake - inclusion_slash
    duty.close()


def test_pruning_never_removes_what_can_still_answer_a_challenge(tmp_path):
    """Adversary: a challenger that waits for the last epoch a challenge is accepted in, and
    an answer that comes in the last epoch of its window. Every epoch `current` prunes with
    prune_before(current): a beat, report and answer of an epoch whose answer window is open in
    `current` are all kept; those of epochs final PRUNE_MARGIN_EPOCHS ago are gone (liveness.db
    does not grow with the chain's age)."""
    store = LivenessStore(tmp_path / "liveness.db")
    report_delay, answer_epochs = 1, 1
    for epoch in range(40):
        store.add_beat(epoch, f"0x{epoch:040x}", "0x" + "ab" * 65)
        store.save_report(epoch, "posted" if epoch < 3 else "skipped", [1])
        store.save_answer(epoch, "answered", epoch=epoch)
    for current in range(40):
        store.prune(prune_before(current, report_delay, answer_epochs))
        for epoch in range(40):
            kept = store.beat(epoch, f"0x{epoch:040x}") is not None
            if current <= liveness.answer_end(epoch, report_delay, answer_epochs):
                assert kept and store.report(epoch) and store.answered(epoch), (current, epoch)
            if current > liveness.answer_end(epoch, report_delay, answer_epochs) \
                    + PRUNE_MARGIN_EPOCHS:
                assert not kept and not store.answered(epoch), (current, epoch)
    assert store.unreported(before=40) == []                # no epoch looks unreported
    assert store.last_reported() == 2                        # the last posted report is kept
    store.close()


def test_get_liveness_is_paged_and_one_beat_is_served_and_junk_gets_4xx(world):
    """GET /liveness/{epoch} once listed every provider of the epoch (up to 131,072 addresses:
    an easy way to make a validator serialize megabytes per request); now counts and a page of
    at most MAX_PAGE. GET /liveness/{epoch}/beats/{provider} serves what answers a challenge
    (another validator's watcher asks it before challenging). Junk paths and queries: 4xx."""
    duty, _, client = make_duty(world, open_epochs=False)
    epoch = 10**9                                            # far from the live epochs
    providers = sorted(Account.create().address for _ in range(5))
    for p in providers:
        duty.store.add_beat(epoch, p, "0x" + "cd" * 65)
    first = client.get(f"/liveness/{epoch}", params={"limit": 2}).json()
    assert (first["beats"], first["providers"], first["next"]) == (5, providers[:2], providers[1])
    second = client.get(f"/liveness/{epoch}",
                        params={"after": first["next"].lower(), "limit": 2}).json()
    assert second["providers"] == providers[2:4]
    last = client.get(f"/liveness/{epoch}", params={"after": second["next"]}).json()
    assert (last["providers"], last["next"]) == (providers[4:], None)

    reply = client.get(f"/liveness/{epoch}/beats/{providers[3].lower()}")
    assert reply.status_code == 200
    assert reply.json() == {"provider": providers[3], "epoch": epoch, "signature": "0x" + "cd" * 65}
    missing = client.get(f"/liveness/{epoch + 1}/beats/{providers[3]}")
    assert missing.status_code == 404 and "holds no beat" in missing.json()["detail"]
    duty.epoch = max(duty.epoch or 0, 100)   # a chain old enough that epoch 0 is pruned
    pruned = client.get(f"/liveness/0/beats/{providers[3]}")
    assert pruned.status_code == 404 and "pruned" in pruned.json()["detail"]
    junk = [f"/liveness/{epoch}?limit=0", f"/liveness/{epoch}?limit={MAX_PAGE + 1}",
            f"/liveness/{epoch}?limit=x", f"/liveness/{epoch}?after=0x12",
            f"/liveness/{epoch}?after=%00", "/liveness/-1", f"/liveness/{2**64}", "/liveness/x",
            f"/liveness/{epoch}/beats/0x12", f"/liveness/x/beats/{providers[0]}",
            f"/liveness/-1/beats/{providers[0]}", f"/liveness/{epoch}/beats/",
            f"/liveness/{epoch}/beats/{providers[0]}/x", f"/liveness/{epoch}/beats/{'a' * 5000}"]
    for path in junk:
        status = client.get(path).status_code
        assert 400 <= status < 500, (path, status)
    duty.close()


QUIET_EPOCH_S = 4


def test_a_quiet_chain_gets_its_epoch_opened_by_the_wall_clock(tmp_path, private_devnet):
    """anvil with automine only (no block without a transaction), like an L3 with no traffic:
    once the chain's last block is mined, `current_epoch()` at the head stays in that block's
    epoch however much time passes, so a duty that judged by the head alone never opened the
    next epoch, no provider could beat, and every honest provider was down for it. The duty
    judges by the wall clock too, and its `open_epoch` mines the block that moves the chain on;
    the provider's watcher reads the seed from the EpochOpened log and its beat is receipted.

    Adversary / bad luck: a wall clock far ahead of the chain's (skewed, or spoofed over NTP
    to make the validator spend gas): `open_epoch` then only opens the head's epoch (a no-op
    when someone did), at most once per wall-clock epoch, never in a loop."""
    with private_devnet(tmp_path, epoch_length=QUIET_EPOCH_S) as (_, network):
        ProviderRegistry(Chain(network, devnet_account(PROVIDER))).register(
            STAKE, "CPU", 1, 1024, 1, "http://127.0.0.1:9", 1)
        chain = Chain(network, devnet_account(VALIDATOR))
        ensure_validator(chain, STAKE, "http://127.0.0.1:9")
        duty, log, client = make_duty((tmp_path, network, chain))
        uptime = duty.uptime
        duty.poll_once()
        head, block = uptime.current_epoch(), chain.block_number()
        target = duty.opener.wall_epoch() + 1
        while duty.opener.wall_epoch() < target:                   # no transaction meanwhile
            time.sleep(0.1)
        assert uptime.current_epoch() == head < target and chain.block_number() == block
        duty.poll_once()                                     # sees the wall clock's epoch
        duty.poll_once()                                     # opens it (open_within_s=0)
        assert uptime.current_epoch() == target == duty.epoch
        assert f'"epoch": {target}' in log.getvalue() and "quiet_chain" in log.getvalue()

        # the provider's side: its watcher's feed brings the seed, its beat is receipted
        feed = LogFeed(Chain(network), WATCHED)
        [(epoch, seed)] = [(a["epoch"], bytes(a["seed"])) for _, e, a in
                           feed.logs(block + 1, chain.block_number()) if e == "EpochOpened"]
        assert (epoch, seed) == (target, uptime.seed(target))
        reply = client.post("/liveness/beat",
                            json=beat_body(devnet_account(PROVIDER), uptime, target, seed))
        assert reply.status_code == 200, reply.text

        # A wall clock epochs ahead: one open_epoch per wall-clock epoch, opening nothing new.
        # (Counted by selector: a 4 s epoch may turn meanwhile on a loaded machine, and the duty
        # then also reports the epoch it receipted the beat in: another transaction.)
        opens = Web3.keccak(text="open_epoch()")[:4]

        def open_epochs_since(block: int) -> int:
            return sum(1 for n in range(block + 1, chain.block_number() + 1)
                       for tx in chain.w3.eth.get_block(n, full_transactions=True)["transactions"]
                       if bytes(tx["input"])[:4] == opens and tx["to"] == uptime.address)

        sent = chain.block_number()
        duty.opener.wall = lambda: time.time() + 100 * QUIET_EPOCH_S
        for _ in range(4):
            duty.poll_once()
        assert open_epochs_since(sent) == 1                  # the one open_epoch
        assert "open-epoch-ahead-of-chain" in log.getvalue()   # the chain's epoch, not 100 on
        duty.opener.wall = lambda: time.time() + 101 * QUIET_EPOCH_S
        for _ in range(4):
            duty.poll_once()
        assert open_epochs_since(sent) == 2
        duty.close()
