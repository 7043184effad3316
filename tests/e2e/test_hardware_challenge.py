"""Hardware challenges end to end: a real `tessera validator run` process challenges two real
provider processes over real HTTP on a real anvil, once per epoch (time moved with
evm_setNextBlockTimestamp). One provider registered what it measured and passes every time; the
other is the same CPU re-registered as an H100 with INFLATION times its measured benchmark.
The faked figure is written straight to the registry with the provider's own key (a fake on
purpose: a real provider measures its benchmark and cannot lie about it otherwise); its process
answers honestly, at CPU speed, and misses every deadline. Also: the provider refuses challenges
that are not signed by a registered validator, name another provider, are past their deadline,
repeat a seed or are malformed, without computing or signing."""

from __future__ import annotations

import os
import time

import httpx
import pytest
from tests.support.processes import ProviderProcess, ValidatorProcess, wait_until

from tessera.chain.accounts import devnet_account
from tessera.chain.client import Chain
from tessera.chain.market import Market
from tessera.compute.hardware_challenge import wrong_rows
from tessera.protocol import hardware_challenge as hc
from tessera.protocol import messages
from tessera.validator.hardware import HardwareStore

EPOCH = 60
HONEST, POSER, VALIDATOR, STRANGER = 3, 4, 7, 8
INFLATION = 20          # the poser claims 20x what its CPU measured
ROUNDS = 3              # challenge epochs
HARDWARE = {"target_s": 0.5, "slack": 4.0, "allowance_s": 1.0, "rows_checked": 16}
# the validator: quick probes, no outage reports, hardware challenges as above
VALIDATOR_TABLES = {"probes": {"max_delay_s": 0.5}, "outages": {"report": False},
                    "hardware": HARDWARE}


@pytest.fixture(scope="module")
def hw_devnet(tmp_path_factory, private_devnet):
    home = tmp_path_factory.mktemp("hardware")
    with private_devnet(home, epoch_length=EPOCH) as (devnet, network):
        yield home, devnet, network


def jump_to_next_epoch(chain: Chain) -> int:
    probes = chain.probes
    epoch = probes.functions.current_epoch().call() + 1
    chain.w3.provider.make_request("evm_setNextBlockTimestamp",
                                   [probes.functions.genesis().call() + epoch * EPOCH])
    chain.w3.provider.make_request("evm_mine", [])
    return epoch


def signed_request(chain: Chain, provider: str, signer: int = VALIDATOR, **change) -> dict:
    body = {"provider": provider, "validator": devnet_account(VALIDATOR).address,
            "seed": "0x" + os.urandom(32).hex(), "size": 128,
            "deadline_ms": int(time.time() * 1000) + 30_000, **change}
    typed = hc.request_typed_data(chain.network.chain_id, chain.probes.address, body["provider"],
                                  body["validator"], body["seed"], body["size"],
                                  body["deadline_ms"])
    return {**body, "signature": messages.sign(devnet_account(signer), typed)}


def refusals(chain: Chain, provider: ProviderProcess) -> None:
    """The provider computes and signs nothing for a bad challenge, and says why."""
    url = f"{provider.url}/hardware-challenge"
    stranger = devnet_account(STRANGER).address
    cases = [
        (signed_request(chain, provider.address, deadline_ms=int(time.time() * 1000) - 1), 400,
         "has passed"),
        (signed_request(chain, devnet_account(POSER).address), 400, "names provider"),
        (signed_request(chain, provider.address, signer=STRANGER), 403, "is signed by"),
        (signed_request(chain, provider.address, signer=STRANGER, validator=stranger), 403,
         "not a registered validator"),
        ({**signed_request(chain, provider.address), "size": 100}, 422, "size"),
    ]
    for body, status, words in cases:
        reply = httpx.post(url, json=body, timeout=30)
        assert reply.status_code == status and words in reply.text, (words, reply.text)
    good = signed_request(chain, provider.address)
    first = httpx.post(url, json=good, timeout=30)
    assert first.status_code == 200, first.text
    answer = hc.HardwareChallengeAnswer.model_validate(first.json())
    assert hc.answer_signer(answer, chain.network.chain_id, chain.probes.address) == \
        provider.address
    assert wrong_rows(good["seed"], 128, answer.fingerprint_values(), list(range(128))) == []
    again = httpx.post(url, json=good, timeout=30)
    assert again.status_code == 409 and "already answered" in again.text


def test_honest_cpu_passes_and_cpu_posing_as_gpu_fails(hw_devnet):
    home, devnet, network = hw_devnet
    chain = Chain(network)
    honest = ProviderProcess(home, devnet.network_file, account=HONEST, price="1.00", name="honest")
    poser = ProviderProcess(home, devnet.network_file, account=POSER, price="1.00", name="poser")
    honest.start()
    poser.start()
    validator = None
    try:
        market = Market(Chain(network, devnet_account(POSER)))
        measured = market.registry.provider_offer(poser.address)
        market.registry.update_offer("NVIDIA H100 80GB HBM3", 1, 81559,
                            INFLATION * measured.benchmark_score, measured.endpoint,
                            measured.price_floor)
        claimed = market.registry.provider_offer(poser.address).benchmark_score
        assert claimed == INFLATION * measured.benchmark_score

        validator = ValidatorProcess(home, devnet.network_file, VALIDATOR, tables=VALIDATOR_TABLES)
        validator.start()
        store = HardwareStore(validator.state_dir / "validator.db")
        epochs = []
        for round_index in range(ROUNDS):
            epoch = chain.probes.functions.current_epoch().call() if round_index == 0 \
                else jump_to_next_epoch(chain)
            wait_until(lambda e=epoch: len(store.records(e)) == 2, timeout=60,
                       what=f"hardware challenges of epoch {epoch}")
            epochs.append(epoch)
        records = [r for e in epochs for r in store.records(e)]
        refusals(chain, honest)  # now, while the validator waits for the next epoch
        metrics = httpx.get(f"{validator.url}/metrics", timeout=5).text
        store.close()
    finally:
        if validator is not None:
            validator.stop()
        honest.stop()
        poser.stop()
    assert validator.proc.returncode == 0

    mine = {p.address: [r for r in records if r.provider == p.address] for p in (honest, poser)}
    assert [r.outcome for r in mine[honest.address]] == ["passed"] * ROUNDS, mine[honest.address]
    assert [r.outcome for r in mine[poser.address]] == ["late"] * ROUNDS, mine[poser.address]
    for r in mine[honest.address]:
        assert r.elapsed_s <= r.deadline_s and r.signature
    for r in mine[poser.address]:
        assert r.benchmark_mflops == claimed
        assert r.size > mine[honest.address][0].size
        assert r.elapsed_s is None or r.elapsed_s > r.deadline_s
        assert not r.signature  # it gave up at its deadline, unsigned
    assert f'tessera_validator_hardware_challenges_total{{outcome="passed"}} {ROUNDS}.0' in metrics
    assert f'tessera_validator_hardware_challenges_total{{outcome="late"}} {ROUNDS}.0' in metrics
    assert "hardware-challenge-late" in (home / "poser.log").read_text()
