"""Zero-shot baseline: the tiny random BERT end to end through the CLI, and the real model on real data."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from ablation.cli.main import main
from ablation.config import ModelConfig, load_config
from ablation.data.batching import tokenize
from ablation.data.corpus import read_split
from ablation.data.run_data import tokenized_split
from ablation.evaluation.zeroshot import ZeroShot
from tests.conftest import QUICK


def test_cli_zero_shot_writes_per_query_csv(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "out" / "per_query.csv"
    code = main(
        [
            "evaluate",
            "--corpus",
            str(corpus),
            "--split",
            "test",
            "--model",
            "tiny-random",
            "--zero-shot",
            "--max-length",
            "32",
            "--format",
            "json",
            "--per-query-csv",
            str(csv),
        ]
    )
    assert code == 0
    metrics = json.loads(capsys.readouterr().out)["metrics"]
    assert set(metrics) >= {"retrieval/acc_at_1/sdoc", "retrieval/recall_at_10/epa", "retrieval/mrr/mean"}
    rows = pd.read_csv(csv)
    assert list(rows.columns) == ["query_id", "task", "mode", "rank", "top1_id", "unseen", "self_copy"]
    assert len(rows) == 30 * 8 and rows["rank"].min() >= 1
    assert rows.groupby("task")["unseen"].sum().eq(24).all()
    assert metrics["unseen/retrieval/acc_at_1/epa"] == pytest.approx(
        (rows[rows["unseen"] & (rows["task"] == "epa")]["rank"] == 1).mean()
    )


@pytest.mark.slow
@pytest.mark.real
def test_minilm_on_real_themes_matches_a_per_query_reference(real_corpus: Path) -> None:
    split = read_split(real_corpus, "test", themes=["sport", "religion"])
    model = ZeroShot(ModelConfig(name="all-MiniLM-L6-v2", max_length=64), 64, "cpu")
    data = tokenized_split(split, model.tokenizer, 64)
    res = model.evaluate(data)
    chance_sdc = 1 / 7.7  # mean pool size of sdc on the test split is ~7.7
    assert res.metrics["retrieval/acc_at_1/sdc"] > 2 * chance_sdc
    # the reference, query by query: cosine of normalised mean-pooled vectors over the same-debate counters,
    # less copies of the true counter's text
    q = model.vectors(tokenize(model.tokenizer, list(split.queries["text"]), 64), "points")
    c = model.vectors(tokenize(model.tokenizer, list(split.counters["text"]), 64), "counters")
    texts = [" ".join(t.split()) for t in split.counters["text"]]
    meta = split.queries[["theme", "debate"]].to_numpy()
    hits = 0
    for i in range(split.n):
        pool = [j for j in range(split.n) if (meta[j] == meta[i]).all() and (j == i or texts[j] != texts[i])]
        sims = c[pool] @ q[i]
        hits += int((sims >= sims[pool.index(i)]).sum() == 1)
    assert res.metrics["retrieval/acc_at_1/sdc"] == pytest.approx(hits / split.n, abs=1e-12)


@pytest.mark.slow
@pytest.mark.real
@pytest.mark.parametrize("loss", ["triplet", "contrastive"])
def test_trained_model_before_any_step_retrieves_like_the_zero_shot_encoder(
    real_corpus: Path, tmp_path: Path, loss: str
) -> None:
    """The PCA-initialised head keeps the pretrained geometry: on validation, mean retrieval acc@1 before
    the first step (the epoch-0 validation, with no step trained) is within .01 of the zero-shot row (a
    random head lost ~.02-.05 here), under either loss's similarity."""
    from ablation.data.run_data import load_run_data
    from ablation.training.recorder import MemoryRecorder
    from ablation.training.trainer import Trainer

    cfg = load_config(QUICK, [f"data.cache_dir={tmp_path / 'cache'}", f"train.loss={loss}"])
    data = load_run_data(cfg, str(real_corpus))
    zero = ZeroShot(cfg.model, cfg.eval.batch_size, "cpu").evaluate(data.val).metrics
    trainer = Trainer(cfg, data, run_test=False)
    trainer.encode_training_split(init_heads=True)
    step0 = trainer.validate(0, MemoryRecorder())["val/retrieval/acc_at_1/mean"]
    assert step0 >= zero["retrieval/acc_at_1/mean"] - 0.01
