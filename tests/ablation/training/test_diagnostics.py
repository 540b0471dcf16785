"""Diagnostics: the per-side backward equals a plain backward; cosine and encoder distance make sense."""

from __future__ import annotations

import math

import pytest
import torch

from ablation.training.diagnostics import backward_by_side, checksums, encoder_distance, grad_norms, param_counts
from models.arms import ARMS
from models.losses.triplet import TripletPairLoss
from tests.conftest import tiny_biencoder as _model
from tests.conftest import token_batch as _batch


def _loss(model):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    out = model(_batch(1), _batch(2), _batch(3))
    return out, TripletPairLoss()(out)["total"]


@pytest.mark.parametrize("arm", sorted(ARMS))
def test_backward_by_side_fills_the_same_gradients_as_backward(arm: str) -> None:
    model = _model(arm)
    _, loss = _loss(model)
    loss.backward()
    expected = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    out, loss = _loss(model)
    cos = backward_by_side(model, out, loss)
    got = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-5, atol=1e-7)
    if arm == "frozen_candidate":
        assert math.isnan(cos)


def _tower_cosine(model) -> float:  # type: ignore[no-untyped-def]
    """Cosine between the two towers' gradients after a plain backward (towers paired by parameter name)."""
    q = dict(model.query_tower.named_parameters())
    c = dict(model.cand_tower.named_parameters())
    a = torch.cat([q[n].grad.flatten() for n in sorted(q) if q[n].grad is not None and c[n].grad is not None])
    b = torch.cat([c[n].grad.flatten() for n in sorted(q) if q[n].grad is not None and c[n].grad is not None])
    return float(a @ b / (a.norm() * b.norm()))


def test_shared_cosine_equals_the_cosine_of_two_separate_towers_with_the_same_weights() -> None:
    # at the start `unshared` has shared's weights in two towers: a plain backward gives each side's
    # contribution separately, which is what the shared arm's per-side backward must find
    shared, unshared = _model("shared", seed=4), _model("unshared", seed=4)
    _, loss = _loss(unshared)
    loss.backward()
    reference = _tower_cosine(unshared)
    out, loss = _loss(shared)
    assert backward_by_side(shared, out, loss) == pytest.approx(reference, rel=1e-4, abs=1e-6)
    assert abs(reference) < 0.999  # the two sides do pull differently
    unshared.zero_grad(set_to_none=True)
    out, loss = _loss(unshared)
    assert backward_by_side(unshared, out, loss) == pytest.approx(reference, rel=1e-4, abs=1e-6)


def test_distance_is_zero_for_shared_and_grows_when_towers_differ() -> None:
    shared, unshared = _model("shared"), _model("unshared")
    assert encoder_distance(shared) == 0.0 and encoder_distance(unshared) == 0.0
    with torch.no_grad():
        next(unshared.cand_tower.parameters()).add_(1.0)
    assert encoder_distance(unshared) > 0.0
    _, loss = _loss(shared)
    loss.backward()
    norms = grad_norms(shared)
    assert set(norms) == {"grad_norm/encoder", "grad_norm/head", "grad_norm/classifier", "grad_norm/total"}
    parts = norms["grad_norm/encoder"] ** 2 + norms["grad_norm/head"] ** 2 + norms["grad_norm/classifier"] ** 2
    assert norms["grad_norm/total"] == pytest.approx(math.sqrt(parts))
    _, loss = _loss(unshared)
    loss.backward()
    two = grad_norms(unshared)  # the common names, plus one per side
    assert set(norms) < set(two) and {"grad_norm/query_encoder", "grad_norm/candidate_head"} <= set(two)
    sides = two["grad_norm/query_encoder"] ** 2 + two["grad_norm/candidate_encoder"] ** 2
    assert two["grad_norm/encoder"] == pytest.approx(math.sqrt(sides))


def test_parameter_counts_per_arm() -> None:
    shared, unshared = _model("shared"), _model("unshared")
    enc = sum(p.numel() for p in shared.query_tower.parameters())
    head = sum(p.numel() for p in shared.query_head.parameters())
    cls = sum(p.numel() for p in shared.classifier.parameters())
    assert param_counts(shared)["params/unique"] == enc + head + cls
    assert param_counts(unshared)["params/unique"] == 2 * (enc + head) + cls
    for m in (shared, unshared):  # total counts a shared module once per side: the same for every arm
        assert param_counts(m)["params/total"] == 2 * (enc + head) + cls
        assert param_counts(m)["params/query_side"] == param_counts(m)["params/candidate_side"] == enc + head
    frozen = param_counts(_model("frozen_candidate"))
    assert frozen["params/trainable"] == enc + head + cls


def test_checksums_name_each_part_and_see_every_weight() -> None:
    shared, unshared = checksums(_model("shared", seed=3)), checksums(_model("unshared", seed=3))
    assert set(shared) == {"checksum.encoder", "checksum.head", "checksum.classifier"}
    assert shared["checksum.encoder"] == unshared["checksum.query_encoder"] == unshared["checksum.candidate_encoder"]
    changed = _model("shared", seed=3)
    with torch.no_grad():
        changed.query_head.bias[0] += 1e-3
    assert checksums(changed)["checksum.head"] != shared["checksum.head"]
