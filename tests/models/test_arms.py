"""The arms: sharing is object identity, both towers of `unshared` train, the frozen side stays frozen."""

from __future__ import annotations

import pytest
import torch

from models.arms import ARMS
from models.biencoder import BiEncoder
from tests.conftest import tiny_biencoder as _model
from tests.conftest import token_batch as _batch


def _count(module: torch.nn.Module, trainable: bool = False) -> int:
    return sum(p.numel() for p in {id(p): p for p in module.parameters()}.values() if p.requires_grad or not trainable)


def _step(model: BiEncoder) -> None:
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    out = model(_batch(1), _batch(2), _batch(3))
    loss = out.query_proj.pow(2).sum() - out.pos_proj.sum() + out.neg_proj.sum() + out.pos_logits.sum()
    loss.backward()
    opt.step()


def _storages(module: torch.nn.Module) -> set[int]:
    return {p.data_ptr() for p in module.parameters()}


def test_unshared_towers_share_no_storage_and_both_train() -> None:
    m = _model("unshared")
    assert m.query_tower is not m.cand_tower and m.query_head is not m.cand_head
    assert not _storages(m.query_tower) & _storages(m.cand_tower)
    assert not _storages(m.query_head) & _storages(m.cand_head)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    _step(m)
    after = m.state_dict()
    for side in ("query_tower", "cand_tower", "query_head", "cand_head"):
        changed = [k for k in after if k.startswith(side) and not torch.equal(before[k], after[k])]
        assert changed, f"{side} did not change after a step"


def test_frozen_candidate_side_is_bit_identical_after_a_step() -> None:
    m = _model("frozen_candidate")
    cand = {k: v.clone() for k, v in m.cand_tower.state_dict().items()}
    cand_head = {k: v.clone() for k, v in m.cand_head.state_dict().items()}
    query = {k: v.clone() for k, v in m.query_tower.state_dict().items()}
    _step(m)
    assert all(torch.equal(cand[k], v) for k, v in m.cand_tower.state_dict().items())
    assert all(torch.equal(cand_head[k], v) for k, v in m.cand_head.state_dict().items())
    assert any(not torch.equal(query[k], v) for k, v in m.query_tower.state_dict().items())
    assert _count(m, trainable=True) == _count(m.query_tower, True) + _count(m.query_head, True) + _count(
        m.classifier, True
    )


def test_partial_sharing_arms() -> None:
    spl = _model("shared_projection")
    assert spl.query_head is spl.cand_head and spl.query_tower is not spl.cand_tower
    ste = _model("shared_embeddings")
    q_emb = ste.query_tower.encoder.embeddings.word_embeddings
    assert q_emb is ste.cand_tower.encoder.embeddings.word_embeddings
    assert ste.query_tower.encoder.encoder is not ste.cand_tower.encoder.encoder


@pytest.mark.parametrize("arm", sorted(ARMS))
def test_every_arm_starts_from_the_same_weights(arm: str) -> None:
    reference, model = _model("shared", seed=3), _model(arm, seed=3)
    for side, ref in (
        ("query_tower", "query_tower"),
        ("cand_tower", "query_tower"),
        ("query_head", "query_head"),
        ("cand_head", "query_head"),
        ("classifier", "classifier"),
    ):
        expected = getattr(reference, ref).state_dict()
        for name, value in getattr(model, side).state_dict().items():
            assert torch.equal(value, expected[name]), (side, name)
    assert not torch.equal(_model(arm, seed=4).query_head.weight, model.query_head.weight)  # the seed decides


def test_indexed_pair_margins_give_the_forward_pass_probabilities() -> None:
    m = _model("shared")
    torch.manual_seed(0)
    torch.nn.init.normal_(m.classifier.linear.weight)  # it starts at zero, where every margin is 0
    torch.nn.init.normal_(m.classifier.linear.bias)
    q = {"proj": torch.randn(5, 8), "pool": torch.randn(5, 32)}
    c = {"proj": torch.randn(7, 8), "pool": torch.randn(7, 32)}
    qi, ci = torch.tensor([0, 4, 2, 2]), torch.tensor([6, 0, 3, 3])
    direct = m.classifier(q["proj"][qi], q["pool"][qi], c["proj"][ci], c["pool"][ci])
    margin = m.classifier.indexed(q, c)(qi, ci)
    torch.testing.assert_close(margin, direct[:, 1] - direct[:, 0], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(margin.sigmoid(), direct.softmax(-1)[:, 1], rtol=1e-5, atol=1e-6)


def test_pca_projection_keeps_distances_within_its_rank_and_is_deterministic() -> None:
    from models.heads import pca_projection

    g = torch.Generator().manual_seed(0)
    basis = torch.randn(3, 10, generator=g)
    x = torch.randn(40, 3, generator=g) @ basis + 5.0  # rank 3 around an offset
    w, b = pca_projection(x, 4)
    y = x @ w.T + b

    def dist(v: torch.Tensor) -> torch.Tensor:
        return (v[:, None] - v[None]).norm(dim=-1)

    torch.testing.assert_close(dist(y), dist(x), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(y.mean(0), torch.zeros(4), rtol=0, atol=1e-4)  # centred
    torch.testing.assert_close(y[:, 3], torch.zeros(40), rtol=0, atol=1e-4)  # past the rank: no variance left
    few, _ = pca_projection(x[:2], 4)  # 2 vectors in 10 dimensions: 2 components, then zero rows
    assert torch.count_nonzero(few[2:]) == 0 and torch.count_nonzero(few[:2]) > 0
    w2, b2 = pca_projection(x.flip(0), 4)  # the same vectors in another order: the same map, signs included
    torch.testing.assert_close(w2, w, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b2, b, rtol=1e-5, atol=1e-5)
    lossy, _ = pca_projection(torch.randn(40, 10, generator=g), 2)
    torch.testing.assert_close(lossy @ lossy.T, torch.eye(2), rtol=1e-5, atol=1e-5)  # orthonormal rows
