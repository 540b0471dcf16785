"""The report, built from a smoke study's MLflow runs: its numbers match the runs, and it survives gaps."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from ablation.config import TASKS, load_config
from ablation.report import build_report
from ablation.report.stats import paired_comparison
from ablation.runner import run_study
from tests.conftest import make_corpus

SMOKE = Path(__file__).resolve().parents[3] / "experiments" / "smoke.yaml"


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    root = tmp_path_factory.mktemp("study")
    corpus = make_corpus(root / "corpus")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    cfg = load_config(SMOKE, ["data.themes=[]", "data.max_debates_per_theme=null"])
    run_study(cfg, corpus=str(corpus), tracking_uri=uri, run_dir=str(root / "run"), report=False)
    return uri, root


def _finals(uri: str) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("smoke")
    return client.search_runs([exp.experiment_id], "tags.role = 'final'")


@pytest.mark.slow
def test_tables_match_the_mlflow_runs(study: tuple[str, Path]) -> None:
    uri, root = study
    paths = build_report("smoke", tracking_uri=uri, out_dir=str(root / "report"), n_resamples=2000)
    table = pd.read_csv(paths.summary)
    test = table[table["kind"] == "test"]
    finals = _finals(uri)
    for arm in ("shared", "unshared"):
        runs = [r for r in finals if r.data.tags["arm"] == arm]
        assert len(runs) == 2
        for task in TASKS:
            for mode in ("rerank", "retrieval"):
                values = pd.Series([r.data.metrics[f"test/{mode}/acc_at_1/{task}"] for r in runs])
                row = test[(test["arm"] == arm) & (test["mode"] == mode) & (test["metric"] == "acc_at_1") & (test["task"] == task)]
                assert row["mean"].item() == pytest.approx(values.mean())
                assert row["std"].item() == pytest.approx(values.std(ddof=1))
    comp = table[table["kind"] == "comparison"]
    assert len(comp) == 2 * len(TASKS)  # unshared vs shared, both modes
    assert ((comp["ci_low"] <= comp["diff"] + 1e-9) & (comp["diff"] <= comp["ci_high"] + 1e-9)).all()
    html = paths.html.read_text()
    assert "<img" in html and not re.search(r"<img[^>]+src='(?!data:image/png;base64,)", html)
    md = paths.markdown.read_text()
    for name in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (paths.markdown.parent / name).is_file()
    for heading in ("Parameter counts", "Test results", "Paired comparison", "Convergence", "Gradients", "Tuning"):
        assert f"## {heading}" in md
    client = MlflowClient(uri)
    study_run = client.search_runs([client.get_experiment_by_name("smoke").experiment_id], "tags.role = 'study'")[0]
    assert {"report/report.html", "report/report.md", "report/summary.csv"} <= {
        a.path for a in client.list_artifacts(study_run.info.run_id, "report")}


@pytest.mark.slow
def test_report_of_a_study_with_a_missing_arm_still_renders(study: tuple[str, Path]) -> None:
    uri, root = study
    client = MlflowClient(uri)
    for run in _finals(uri):
        if run.data.tags["arm"] == "unshared":
            client.delete_run(run.info.run_id)
    paths = build_report("smoke", tracking_uri=uri, out_dir=str(root / "report2"), n_resamples=500)
    md = paths.markdown.read_text()
    assert "## Missing results" in md and "unshared: 0 of 2 final runs finished" in md
    assert "No comparison" in md


def test_paired_comparison_detects_a_real_difference() -> None:
    idx = [f"q{i}" for i in range(200)]
    ref = pd.DataFrame({0: [0.0] * 200, 1: [0.0] * 200}, index=idx)
    better = pd.DataFrame({0: [1.0] * 100 + [0.0] * 100, 1: [1.0] * 100 + [0.0] * 100}, index=idx)
    c = paired_comparison(ref, better, n_resamples=2000)
    assert c.diff == pytest.approx(0.5) and c.significant and c.low > 0.4
    same = paired_comparison(ref, ref.copy(), n_resamples=2000)
    assert same.diff == 0 and not same.significant
