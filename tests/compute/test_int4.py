"""int4 compression ("fewer bits", issue 16): 7 levels a side, two values to a byte, error
feedback, the same wire format; a payload an int4 worker sends is bound to its last state like
an int8 one, and a malformed packing is refused."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.support.compute import TINY

from tessera.compute.compress import (
    ErrorFeedback,
    Quantized,
    analytic_bytes,
    dequantize_int8,
    pack_int4,
    quantize,
    unpack_int4,
)
from tessera.compute.diloco import (
    Coordinator,
    DilocoConfig,
    apply_broadcast,
    decode_tensors,
    encode_tensors,
    new_model,
    parameter_state,
)
from tessera.compute.diloco_simulation import run_diloco
from tessera.compute.replay import CommittingWorker, open_payload, verify_payload
from tessera.compute.train import configure_determinism, split
from tessera.errors import WireFormatError

CFG = DilocoConfig(workload=TINY, workers=2, inner_steps=8, rounds=3, compression="int4")


@pytest.mark.parametrize("n,chunk", [(1000, 64), (7, 4), (1, 8), (0, 8)])
def test_int4_error_is_at_most_half_a_scale_and_packs_two_to_a_byte(n, chunk):
    x = torch.randn(n, generator=torch.Generator().manual_seed(n))
    qt = quantize(x, chunk, 7)
    assert qt.q.dtype == torch.int8 and bool((qt.q.abs() <= 7).all())
    bound = qt.scales[torch.arange(n) // chunk] / 2
    assert ((dequantize_int8(qt) - x).abs() <= bound * (1 + 1e-5) + 1e-30).all()
    packed = pack_int4({"flat": qt})
    assert packed["flat"].dtype == torch.int8 and packed["flat"].numel() == (n + 1) // 2
    assert torch.equal(unpack_int4(packed, chunk, n)["flat"], dequantize_int8(qt))
    assert analytic_bytes(n, "int4") == (n + 1) // 2


def test_int4_error_feedback_tracks_the_true_sum():
    fb = ErrorFeedback(chunk=64, levels=7)
    true_sum, sent_sum = torch.zeros(64), torch.zeros(64)
    for i in range(200):
        x = torch.full((64,), 1e-2)
        x[0] = 1.0 + 0.01 * (i % 7)
        true_sum += x
        sent_sum += dequantize_int8(fb.compress({"x": x})["x"])
    # a signal 100x below the chunk's absmax rounds to zero alone; with feedback it arrives
    assert (true_sum - sent_sum).abs().max() < 0.1
    assert sent_sum[1:].min() > 1.9


@pytest.mark.parametrize("values,numel,why", [
    ([0x88, 0x88], 5, "shape"),                  # 2 bytes cannot hold 5 values
    ([0x80, 0x88], 4, "-8"),                     # nibble 0: the value -8 is never sent
    ([0x88, 0x98], 3, "padding"),                # the odd count's pad nibble is not a zero value
])
def test_a_malformed_int4_packing_is_refused(values, numel, why):
    packed = torch.tensor(values, dtype=torch.uint8).view(torch.int8)
    with pytest.raises(WireFormatError, match=why):
        unpack_int4({"flat": packed, "flat::scale": torch.ones(1)}, 4096, numel)


def test_an_int4_payload_round_trips_through_the_wire_and_half_the_int8_size():
    state = parameter_state(new_model(TINY))
    sizes = {c: len(encode_tensors(state, c, CFG.chunk, {"kind": "k"})) for c in ("int8", "int4")}
    n = sum(t.numel() for t in state.values())
    assert sizes["int8"] - sizes["int4"] == pytest.approx(n / 2, abs=64)
    decoded = decode_tensors(encode_tensors(state, "int4", CFG.chunk, {"kind": "k"}), state, "int4",
                             CFG.chunk, "k")
    assert all(decoded[k].shape == state[k].shape for k in state)
    with pytest.raises(WireFormatError, match="compression"):
        decode_tensors(encode_tensors(state, "int8", CFG.chunk, {"kind": "k"}), state, "int4",
                       CFG.chunk, "k")


def test_int4_workers_rebuild_the_published_state_and_their_payloads_verify(corpus):
    configure_determinism(TINY)
    tokens, _ = split(corpus, TINY)
    start = parameter_state(new_model(TINY))
    worker = CommittingWorker(CFG, 0, tokens)
    coordinator = Coordinator(CFG)
    view = coordinator.global_state()
    for r in range(3):
        trace = worker.run_round_committed(view, r, 4)
        c = trace.commitment
        verdict = verify_payload(CFG, 0, r, c.root, c.n_leaves, 4, c.payload.result_hash, view,
                                 open_payload(trace))
        assert verdict.ok, verdict.reason
        update = coordinator.apply([coordinator.decode(trace.payload)])
        view = apply_broadcast(view, update.broadcast, CFG)
        assert all(torch.equal(view[k], coordinator.published[k]) for k in view)
    assert any(not torch.equal(view[k], start[k]) for k in view)


def test_an_int4_job_learns_in_simulation(corpus):
    result = run_diloco(CFG.model_copy(update={"rounds": 4}), corpus)
    before = run_diloco(CFG.model_copy(update={"rounds": 1, "inner_steps": 1}), corpus)
    assert result.final_val_loss < before.final_val_loss
    assert result.bytes_up_analytic == 4 * 2 * ((result.parameters + 1) // 2)


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.integers(-7, 7), max_size=300), chunk=st.integers(1, 64))
def test_int4_packing_round_trips_every_value_sequence(values, chunk):
    q = torch.tensor(values, dtype=torch.int8)
    scales = torch.ones(max(1, -(-len(values) // chunk)))
    packed = pack_int4({"flat": Quantized(q, scales, chunk)})
    assert packed["flat"].numel() == (len(values) + 1) // 2
    assert torch.equal(unpack_int4(packed, chunk, len(values))["flat"], q.to(torch.float32))
