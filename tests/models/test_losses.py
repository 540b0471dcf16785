"""The losses: the in-batch contrastive loss is InfoNCE over [positives; negatives] with copies left out,
the triplet loss is the seed's, and both add the same pair-classifier terms."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from models.biencoder import TripletOutput
from models.losses.contrastive import InBatchContrastiveLoss
from models.losses.registry import LOSSES, SIMILARITY, build_loss
from models.losses.triplet import TripletPairLoss


def _out(b: int = 4, dim: int = 6, seed: int = 0) -> TripletOutput:
    g = torch.Generator().manual_seed(seed)

    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g)

    return TripletOutput(r(b, 9), r(b, dim), r(b, 9), r(b, dim), r(b, 9), r(b, dim), r(b, 2), r(b, 2))


def _by_hand(out: TripletOutput, scale: float, keep: list[list[int]]) -> float:
    """Mean over queries of −log softmax of its own counter among the candidates `keep[i]` (columns of
    [positives; negatives]), one query at a time."""
    cands = torch.cat([out.pos_proj, out.neg_proj])
    total = 0.0
    for i, cols in enumerate(keep):
        sims = [scale * float(F.cosine_similarity(out.query_proj[i], cands[j], dim=0)) for j in cols]
        total += -(sims[cols.index(i)] - math.log(sum(math.exp(s) for s in sims)))
    return total / len(keep)


def test_contrastive_term_is_infonce_over_positives_and_negatives() -> None:
    out = _out()
    terms = InBatchContrastiveLoss(scale=20.0)(out)
    assert float(terms["contrastive"]) == pytest.approx(_by_hand(out, 20.0, [list(range(8))] * 4), rel=1e-5)
    assert float(terms["total"]) == pytest.approx(float(terms["contrastive"] + terms["ce_pos"] + terms["ce_neg"]))


def test_masked_copies_are_left_out_of_the_softmax_and_a_wrong_mask_changes_the_loss() -> None:
    out = _out(seed=1)
    copies = torch.zeros(4, 8, dtype=torch.bool)
    copies[0, 2] = copies[0, 5] = copies[3, 1] = True  # query 0: counter 2 and negative 1 are copies
    got = float(InBatchContrastiveLoss(10.0)(out, copies)["contrastive"])
    keep = [[j for j in range(8) if not copies[i, j]] for i in range(4)]
    assert got == pytest.approx(_by_hand(out, 10.0, keep), rel=1e-5)
    assert got != pytest.approx(float(InBatchContrastiveLoss(10.0)(out)["contrastive"]), rel=1e-3)
    wrong = copies.clone()
    wrong[0, 5], wrong[0, 6] = False, True
    assert float(InBatchContrastiveLoss(10.0)(out, wrong)["contrastive"]) != pytest.approx(got, rel=1e-3)


def test_the_target_cannot_be_masked() -> None:
    copies = torch.zeros(4, 8, dtype=torch.bool)
    copies[2, 2] = True
    with pytest.raises(ValueError, match="target"):
        InBatchContrastiveLoss()(_out(), copies)


def test_both_losses_share_the_pair_terms_and_differ_in_the_similarity_term() -> None:
    out = _out(seed=2)
    t, c = TripletPairLoss(1.0)(out), InBatchContrastiveLoss(20.0)(out)
    assert float(t["ce_pos"]) == float(c["ce_pos"]) and float(t["ce_neg"]) == float(c["ce_neg"])
    expected = torch.nn.TripletMarginLoss(margin=1.0, p=2)(out.query_proj, out.pos_proj, out.neg_proj)
    assert float(t["triplet"]) == pytest.approx(float(expected))
    assert set(t) == {"triplet", "ce_pos", "ce_neg", "total"} and set(c) == {"contrastive", "ce_pos", "ce_neg", "total"}


def test_each_loss_names_the_similarity_retrieval_uses() -> None:
    assert SIMILARITY == {"triplet": "l2", "contrastive": "cosine"}
    assert set(LOSSES) == set(SIMILARITY)
    assert build_loss("contrastive", scale=7.0).scale == 7.0
    with pytest.raises(ValueError, match="unknown loss"):
        build_loss("hinge")


def test_the_scale_sharpens_the_softmax() -> None:
    out = _out(seed=3)
    low, high = (float(InBatchContrastiveLoss(s)(out)["contrastive"]) for s in (1.0, 50.0))
    assert low == pytest.approx(_by_hand(out, 1.0, [list(range(8))] * 4), rel=1e-5)
    assert high == pytest.approx(_by_hand(out, 50.0, [list(range(8))] * 4), rel=1e-4)
