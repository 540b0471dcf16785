"""The trainer's determinism: identical seeds give identical starts, batches, negatives and first losses."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from ablation.config import ExperimentConfig, replace_path
from ablation.data.run_data import RunData, load_run_data
from ablation.training import trainer as trainer_module
from ablation.training.recorder import MemoryRecorder
from ablation.training.trainer import NonFiniteLoss, Trainer
from tests.conftest import smoke_config

pytestmark = pytest.mark.device  # make gpu-check runs these on CUDA


@pytest.fixture()
def data(corpus: Path) -> RunData:
    return load_run_data(smoke_config(), str(corpus))


def _fit(cfg: ExperimentConfig, data: RunData) -> tuple[Trainer, MemoryRecorder]:
    rec = MemoryRecorder()
    trainer = Trainer(cfg, data)
    trainer.fit(rec)
    return trainer, rec


@pytest.fixture()
def mined(monkeypatch: pytest.MonkeyPatch) -> list[np.ndarray]:
    """Every epoch's negatives, as the trainer mined them (a spy on `mine`)."""
    seen: list[np.ndarray] = []
    real = trainer_module.mine

    def spy(*args, **kwargs):  # type: ignore[no-untyped-def]
        negatives = real(*args, **kwargs)
        seen.append(negatives.index.copy())
        return negatives

    monkeypatch.setattr(trainer_module, "mine", spy)
    return seen


def test_arms_under_one_seed_share_start_batches_negatives_and_first_loss(data: RunData) -> None:
    cfg = smoke_config()
    shared, rec_s = _fit(replace_path(cfg, "model.sharing", "shared"), data)
    unshared, rec_u = _fit(replace_path(cfg, "model.sharing", "unshared"), data)
    assert (
        rec_s.tags["checksum.encoder"]
        == rec_u.tags["checksum.query_encoder"]
        == rec_u.tags["checksum.candidate_encoder"]
    )
    assert rec_s.tags["checksum.head"] == rec_u.tags["checksum.query_head"] == rec_u.tags["checksum.candidate_head"]
    assert rec_s.tags["checksum.classifier"] == rec_u.tags["checksum.classifier"]
    for epoch in (1, 2):
        assert rec_s.tags[f"digest.batches.epoch{epoch}"] == rec_u.tags[f"digest.batches.epoch{epoch}"]
    assert rec_s.tags["digest.negatives.epoch1"] == rec_u.tags["digest.negatives.epoch1"]
    other_seed = _fit(replace_path(cfg, "seed", 2), data)[1]
    assert other_seed.tags["digest.batches.epoch1"] != rec_s.tags["digest.batches.epoch1"]
    assert shared.result.losses[0] == pytest.approx(unshared.result.losses[0], rel=1e-6)
    assert shared.result.losses[1:] != unshared.result.losses[1:]  # then the arms diverge


def test_same_seed_twice_gives_the_same_curve_and_another_seed_does_not(data: RunData) -> None:
    cfg = smoke_config(**{"model.sharing": "unshared"})
    a, _ = _fit(cfg, data)
    b, _ = _fit(cfg, data)
    assert a.result.losses == b.result.losses
    assert a.result.test_metrics == b.result.test_metrics
    c, _ = _fit(replace_path(cfg, "seed", 7), data)
    assert c.result.losses != a.result.losses


def test_reuse_of_training_embeddings_changes_only_the_refresh(
    data: RunData, monkeypatch: pytest.MonkeyPatch, mined: list[np.ndarray]
) -> None:
    encodings: list[bool] = []
    encode = Trainer.encode_training_split
    monkeypatch.setattr(
        Trainer, "encode_training_split", lambda self, **kw: encodings.append(True) or encode(self, **kw)
    )
    cfg = smoke_config(**{"negatives.random_rate": 0.0, "train.epochs": 3})
    fresh, _ = _fit(cfg, data)
    assert len(encodings) == 3  # one encoding pass of the training split per epoch
    encodings.clear()
    reused, rec = _fit(replace_path(cfg, "negatives.reuse_train_embeddings", True), data)
    assert len(encodings) == 1  # only before the first step: later epochs mine the training-pass vectors
    assert [v for _, v in rec.history("neg/fraction_random")] == [0.0, 0.0, 0.0]
    assert np.array_equal(mined[0], mined[3])  # the same vectors before any step
    per_epoch = len(fresh.result.losses) // 3
    assert fresh.result.losses[:per_epoch] == reused.result.losses[:per_epoch]


def test_per_step_and_per_epoch_records(data: RunData) -> None:
    trainer, rec = _fit(smoke_config(**{"model.sharing": "unshared", "train.grad_cosine_every": 1}), data)
    steps = len(trainer.result.losses)
    for key in (
        "loss/total",
        "loss/triplet",
        "loss/ce_pos",
        "loss/ce_neg",
        "lr",
        "grad_norm/total",
        "grad_norm/encoder",
        "grad_norm/head",
        "grad_norm/query_encoder",
        "grad_norm/candidate_encoder",
        "grad_norm/classifier",
        "grad_cosine/query_vs_candidate",
        "encoder_distance",
    ):
        assert len(rec.history(key)) == steps, key
    distances = [v for _, v in rec.history("encoder_distance")]
    assert distances[0] == 0.0 and distances[-1] > 0.0  # identical at the start, then the towers drift apart
    cos = [v for _, v in rec.history("grad_cosine/query_vs_candidate")]
    assert np.isfinite(cos).all() and len(set(cos)) > 1  # measured each step, not a constant
    for key in ("val/rerank/acc_at_1/mean", "val/retrieval/mrr/sdoc", "neg/fraction_random", "time/epoch_s"):
        assert [s for s, _ in rec.history(key)] == ([0, 1, 2] if key.startswith("val/") else [1, 2]), key
    assert "test/rerank/acc_at_1/epa" in trainer.result.test_metrics
    assert "per_query_test.csv" in rec.texts and "config.yaml" in rec.texts
    per_epoch = steps // 2  # two epochs of equal length
    for key in ("loss/total", "grad_norm/total"):  # the epoch mean is that epoch's steps' mean, at its step
        values = [v for _, v in rec.history(key)]
        means = rec.history(f"epoch/{key}")
        assert [s for s, _ in means] == [1, 2], key
        assert [v for _, v in means] == pytest.approx([np.mean(values[:per_epoch]), np.mean(values[per_epoch:])])


def test_shared_gradient_cosine_uses_one_backward_per_side(data: RunData) -> None:
    _, rec = _fit(smoke_config(**{"train.grad_cosine_every": 1, "train.epochs": 1}), data)
    cos = [v for _, v in rec.history("grad_cosine/query_vs_candidate")]
    assert cos and all(np.isfinite(cos)) and any(abs(v) < 0.999 for v in cos)
    assert all(v == 0.0 for _, v in rec.history("encoder_distance"))


def test_non_finite_loss_stops_the_run(data: RunData) -> None:
    with pytest.raises(NonFiniteLoss, match="loss became"):
        _fit(smoke_config(**{"train.lr": 1.0e30, "train.epochs": 2, "train.optimizer": "sgd"}), data)


@pytest.mark.parametrize("arm", ["shared", "unshared"])
def test_no_negative_is_a_copy_of_the_query_or_its_counter(data: RunData, arm: str, mined: list[np.ndarray]) -> None:
    _, rec = _fit(smoke_config(**{"model.sharing": arm, "negatives.random_rate": 0.0}), data)
    split = data.train.split
    texts = [" ".join(t.split()) for t in split.candidate_texts]
    n = split.n
    assert len(mined) == 2
    for negs in mined:
        assert not any(texts[j] in (texts[i], texts[n + i]) for i, j in enumerate(negs))
    assert [v for _, v in rec.history("neg/dup_negatives_used")] == [0.0, 0.0]
    # before the first step both sides encode a text alike, so a copy of the query's own text sits at
    # distance 0: the miner had to pass over copies
    assert rec.history("neg/dup_neighbours_skipped")[0][1] > 0


def test_pca_head_starts_where_the_pooled_vectors_are(data: RunData) -> None:
    """With a head as wide as the encoder, the PCA start is a rotation: validation retrieval before any
    step equals retrieval by L2 on the pooled vectors of the untrained encoder."""
    from ablation.evaluation.ranking import evaluate_scores, score_matrix
    from ablation.evaluation.trained import encode_sides, token_texts

    cfg = smoke_config(**{"model.proj_dim": 32, "train.epochs": 1})
    trainer = Trainer(cfg, data)
    q, c = encode_sides(trainer.model, *token_texts(data.pad_id)(data.val), 32, trainer.device)
    pooled = evaluate_scores(data.val.split, score_matrix(q["pool"], c["pool"], "l2")).metrics
    _, rec = _fit(cfg, data)
    for key in ("retrieval/acc_at_1/mean", "retrieval/mrr/epa", "retrieval/acc_at_1/sdoc"):
        assert rec.history(f"val/{key}")[0] == (0, pytest.approx(pooled[key], abs=1e-9)), key
    # the zero-initialised classifier keeps the retrieval order before any step
    assert rec.history("val/rerank/acc_at_1/mean")[0][1] == rec.history("val/retrieval/acc_at_1/mean")[0][1]
    _, rec_random = _fit(replace_path(cfg, "model.head_init", "random"), data)
    assert rec_random.history("val/retrieval/mrr/mean")[0][1] != rec.history("val/retrieval/mrr/mean")[0][1]


def test_clipping_is_recorded_per_step_and_as_a_share(data: RunData) -> None:
    trainer, rec = _fit(smoke_config(**{"train.grad_clip": 0.05}), data)
    flags = [v for _, v in rec.history("grad/clipped")]
    norms = [v for _, v in rec.history("grad_norm/total")]
    assert len(flags) == len(trainer.result.losses) and flags == [float(n > 0.05) for n in norms]
    shares = [v for _, v in rec.history("grad/clipped_share")]
    assert shares[-1] == sum(flags) / len(flags) and shares[-1] > 0
    _, unclipped = _fit(smoke_config(), data)
    assert not unclipped.history("grad/clipped")  # no threshold: nothing is recorded as clipped


def test_bf16_trains_under_cpu_autocast_where_the_cpu_has_it(data: RunData) -> None:
    from ablation.errors import UserError
    from ablation.runtime import cpu_bf16_flags

    cfg = smoke_config(**{"train.precision": "bf16", "train.device": "cpu"})
    if not cpu_bf16_flags():  # detected, never assumed: elsewhere the run is refused with the reason
        with pytest.raises(UserError, match="neither AVX-512 BF16 nor AMX"):
            _fit(cfg, data)
        return
    trainer, rec = _fit(cfg, data)
    fp32, _ = _fit(smoke_config(**{"train.device": "cpu"}), data)
    assert np.isfinite(trainer.result.losses).all()
    assert trainer.result.losses != fp32.result.losses  # it did compute in bf16
    assert trainer.result.losses[0] == pytest.approx(fp32.result.losses[0], rel=0.05)  # and the same thing
    assert rec.tags["precision"].startswith("bf16 autocast (CPU, ")


def _normalised(texts: list[str]) -> list[str]:
    return [" ".join(t.split()) for t in texts]


def test_contrastive_batches_leave_out_copies_of_the_counter_and_the_query(data: RunData) -> None:
    """The fixture cross-lists a debate and repeats a pair, so with the whole split in one batch copies of
    a query's counter and of the query itself are among its in-batch candidates: the mask marks exactly
    those, it is counted per step and per epoch, and dropping it would change the loss."""
    cfg = smoke_config(**{"train.loss": "contrastive", "train.batch_size": 64, "train.epochs": 1})
    trainer, rec = _fit(cfg, data)
    split, n = data.train.split, data.train.split.n
    texts = _normalised(split.candidate_texts)
    idx = np.arange(n)
    negatives = np.random.default_rng(0).integers(0, 2 * n, n)
    copies = trainer.copies(idx, negatives)
    cands = np.concatenate([idx, negatives[idx]])
    expected = np.array(
        [[j != i and texts[c] in (texts[q], texts[n + q]) for j, c in enumerate(cands)] for i, q in enumerate(idx)]
    )
    assert copies.shape == (n, 2 * n) and np.array_equal(copies, expected) and copies.sum() > 0
    masked = [v for _, v in rec.history("batch/copies_masked")]
    assert len(masked) == len(trainer.result.losses) and sum(masked) > 0
    assert rec.history("neg/inbatch_copies_masked") == [(1, sum(masked))]
    q, p, neg = (
        {k: torch.as_tensor(v) for k, v in b.items()}
        for b in (
            trainer.texts(data.train)[0].batch(idx),
            trainer.texts(data.train)[1].batch(idx),
            trainer.texts(data.train)[1].batch(negatives[idx]),
        )
    )
    trainer.model.eval()
    with torch.no_grad():
        out = trainer.model(q, p, neg)
        with_mask = float(trainer.loss_fn(out, torch.from_numpy(copies))["contrastive"])
        without = float(trainer.loss_fn(out)["contrastive"])
    assert with_mask < without  # copies score like the target: counted as negatives they raise the loss


@pytest.mark.parametrize(("loss", "similarity"), [("triplet", "l2"), ("contrastive", "cosine")])
def test_retrieval_and_mining_use_the_similarity_the_loss_trains(data: RunData, loss: str, similarity: str) -> None:
    from ablation.evaluation.ranking import evaluate_scores, score_matrix
    from ablation.evaluation.trained import encode_sides

    cfg = smoke_config(**{"train.loss": loss, "train.epochs": 1})
    trainer = Trainer(cfg, data)
    mined = trainer.encode_training_split(init_heads=True)
    norms = np.linalg.norm(mined[1], axis=1)
    assert np.allclose(norms, 1.0, atol=1e-5) == (similarity == "cosine")  # unit vectors: L2 ranks as cosine
    q, c = encode_sides(trainer.model, *trainer.texts(data.val), 32, trainer.device)
    by = {
        m: evaluate_scores(data.val.split, score_matrix(q["proj"], c["proj"], m)).metrics["retrieval/mrr/mean"]
        for m in ("l2", "cosine")
    }
    assert by["l2"] != by["cosine"]  # the test can tell them apart
    _, rec = _fit(cfg, data)
    assert rec.tags["similarity"] == similarity
    assert rec.history("val/retrieval/mrr/mean")[0] == (0, pytest.approx(by[similarity], abs=1e-9))
    assert rec.params["train.loss"] == loss
    assert len(rec.history(f"loss/{loss}")) == len(rec.history("loss/total")) > 0


@pytest.mark.parametrize("loss", ["triplet", "contrastive"])
def test_the_trainers_own_optimizer_moves_both_towers_of_unshared_and_the_one_of_shared(
    data: RunData, loss: str
) -> None:
    from ablation.training.negatives import mine

    for arm in ("unshared", "shared"):
        trainer = Trainer(smoke_config(**{"model.sharing": arm, "train.loss": loss}), data)
        q, c = trainer.encode_training_split(init_heads=True)
        negs = mine(q, c, 0.5, np.random.default_rng(0), trainer.forbidden).index
        model = trainer.model
        before = {n: p.detach().clone() for n, p in model.named_parameters(remove_duplicate=False)}
        trainer.train_step(np.arange(8), negs, MemoryRecorder())
        moved = {n for n, p in model.named_parameters(remove_duplicate=False) if not torch.equal(before[n], p)}
        for side in ("query_tower.", "cand_tower.", "query_head.", "cand_head.", "classifier."):
            assert any(n.startswith(side) for n in moved), (arm, side)  # a shared tower moves under both names
        if arm == "unshared":
            q_w = dict(model.query_tower.named_parameters())
            c_w = dict(model.cand_tower.named_parameters())
            assert any(not torch.equal(q_w[n], c_w[n]) for n in q_w)  # they moved apart: two optimised towers
