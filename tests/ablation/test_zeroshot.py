"""Zero-shot baseline: the tiny random BERT end to end through the CLI, and the real model on real data."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from ablation.cli import main
from ablation.config import EvalConfig, ModelConfig
from ablation.corpus import read_split
from ablation.zeroshot import zero_shot


def test_cli_zero_shot_writes_per_query_csv(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "out" / "per_query.csv"
    code = main(["evaluate", "--corpus", str(corpus), "--split", "test", "--model", "tiny-random", "--zero-shot",
                 "--max-length", "32", "--format", "json", "--per-query-csv", str(csv)])
    assert code == 0
    metrics = json.loads(capsys.readouterr().out)["metrics"]
    assert set(metrics) >= {"retrieval/acc_at_1/sdoc", "retrieval/recall_at_10/epa", "retrieval/mrr/mean"}
    rows = pd.read_csv(csv)
    assert list(rows.columns) == ["query_id", "task", "mode", "rank", "top1_id", "unseen", "self_copy"]
    assert len(rows) == 30 * 8 and rows["rank"].min() >= 1
    assert rows.groupby("task")["unseen"].sum().eq(24).all()
    assert metrics["unseen/retrieval/acc_at_1/epa"] == pytest.approx((rows[rows["unseen"] & (rows["task"] == "epa")]["rank"] == 1).mean())


@pytest.mark.slow
@pytest.mark.real
def test_minilm_beats_chance_on_real_theme(real_corpus: Path) -> None:
    split = read_split(real_corpus, "test", themes=["sport", "religion"])
    res = zero_shot(split, ModelConfig(name="all-MiniLM-L6-v2", max_length=64), EvalConfig(), "cpu")
    chance_sdc = 1 / 7.7  # mean pool size of sdc on the test split is ~7.7
    assert res.metrics["retrieval/acc_at_1/sdc"] > 2 * chance_sdc
    assert res.metrics["retrieval/acc_at_1/sdoc"] >= res.metrics["retrieval/acc_at_1/sda"]
