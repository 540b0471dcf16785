"""The report, built from a smoke study's MLflow runs: its numbers match the runs, and it survives gaps."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from ablation.names import TASKS
from ablation.report.build import build_report
from ablation.report.stats import holm
from tests.conftest import SmokeStudy


def _copy(smoke_study: SmokeStudy, tmp_path: Path) -> str:
    """A copy of the session's smoke store: a report publishes into its store, and the other tests expect
    the study as it finished (no report, no view), whatever order they run in."""
    shutil.copy(smoke_study.root / "mlflow.db", tmp_path / "mlflow.db")
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def _finals(uri: str) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("smoke")
    return client.search_runs([exp.experiment_id], "tags.role = 'final'")


@pytest.mark.slow
def test_tables_match_the_mlflow_runs(smoke_study: SmokeStudy, tmp_path: Path) -> None:
    uri = _copy(smoke_study, tmp_path)
    paths = build_report("smoke", tracking_uri=uri, out_dir=str(tmp_path / "report"))
    table = pd.read_csv(paths.summary)
    test = table[table["kind"] == "test"]
    finals = _finals(uri)
    for arm in ("shared", "unshared"):
        runs = [r for r in finals if r.data.tags["arm"] == arm]
        assert len(runs) == 2
        for task in TASKS:
            for mode in ("rerank", "retrieval"):
                values = pd.Series([r.data.metrics[f"test/{mode}/acc_at_1/{task}"] for r in runs])
                row = test[
                    (test["arm"] == arm)
                    & (test["mode"] == mode)
                    & (test["metric"] == "acc_at_1")
                    & (test["task"] == task)
                    & (test["slice"] == "all")
                ]
                assert row["mean"].item() == pytest.approx(values.mean())
                assert row["std"].item() == pytest.approx(values.std(ddof=1))
    comp = table[table["kind"] == "comparison"]
    per_task = comp[comp["task"] != "mean"]
    assert set(per_task["slice"]) == {"all", "unseen", "self_copy"}
    assert len(per_task[per_task["slice"] == "all"]) == 2 * len(TASKS)  # unshared vs shared, both modes
    # the mean over tasks, paired by seed: exactly the difference of the arms' mean acc@1 over seeds and tasks
    for mode in ("retrieval", "rerank"):
        row = comp[(comp["slice"] == "all") & (comp["mode"] == mode) & (comp["task"] == "mean")]
        means = test[
            (test["slice"] == "all")
            & (test["mode"] == mode)
            & (test["metric"] == "acc_at_1")
            & (test["task"] == "mean")
        ]
        expected = means[means["arm"] == "unshared"]["mean"].item() - means[means["arm"] == "shared"]["mean"].item()
        assert row["diff"].item() == pytest.approx(expected, abs=1e-12)
        assert row["n_seeds"].item() == 2
    for _, family in per_task.groupby(["slice", "mode"]):  # Holm within each family of 8 tasks
        assert np.allclose(family["p_adjusted"], holm(family["p_value"].to_numpy()))
    assert not comp["significant"].any()  # 2 seeds: the seed variance cannot be estimated
    unseen = test[(test["slice"] == "unseen") & (test["mode"] == "retrieval") & (test["metric"] == "acc_at_1")]
    assert set(unseen["arm"]) == {"shared", "unshared"} and len(unseen) == 2 * (len(TASKS) + 1)
    html = paths.html.read_text()
    assert "<img" in html and not re.search(r"<img[^>]+src=[\"'](?!data:image/png;base64,)", html)
    md = paths.markdown.read_text()
    for name in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md):
        assert (paths.markdown.parent / name).is_file()
    for heading in (
        "Parameter counts",
        "Test results",
        "Paired comparison",
        "Training against the untrained encoder",
        "Convergence",
        "Gradients",
        "Tuning",
    ):
        assert f"## {heading}" in md
    verdict = md.split("## Verdict", 1)[1].split("##", 1)[0]
    assert md.index("## Verdict") < md.index("## Study") and "Question: does shared" in verdict
    assert "no call can be made" in verdict and "2 seed(s)" in verdict
    assert "seed variance cannot be estimated" in md
    assert "rerank recall@5" not in md and "rerank recall@10" in md  # smoke reranks the top 5
    assert "unseen slice, 24 queries" in md
    counts = md.split("## Parameter counts", 1)[1].split("##", 1)[0]
    assert re.search(r"\| \d{1,3}(,\d{3})+ \|", counts)  # thousands separators
    client = MlflowClient(uri)
    study_run = client.search_runs([client.get_experiment_by_name("smoke").experiment_id], "tags.role = 'study'")[0]
    assert {"report/report.html", "report/report.md", "report/summary.csv"} <= {
        a.path for a in client.list_artifacts(study_run.info.run_id, "report")
    }


@pytest.mark.slow
def test_report_of_a_study_with_a_missing_arm_still_renders(smoke_study: SmokeStudy, tmp_path: Path) -> None:
    shutil.copy(smoke_study.root / "mlflow.db", tmp_path / "mlflow.db")  # deletes go to a copy of the store
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    for run in _finals(uri):
        if run.data.tags["arm"] == "unshared":
            client.delete_run(run.info.run_id)
    paths = build_report("smoke", tracking_uri=uri, out_dir=str(tmp_path / "report"))
    md = paths.markdown.read_text()
    assert "## Missing results" in md and "unshared: 0 of 2 final runs finished" in md
    assert "No comparison" in md


def test_the_report_needs_mlflow_alone(
    smoke_study: SmokeStudy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the run folder (its Optuna journal) and the corpus out of reach, and no ARGUANA_DIR, the report
    is the same as one built beside them: it reads the MLflow store and its artifacts alone."""
    uri = _copy(smoke_study, tmp_path)
    here = build_report("smoke", tracking_uri=uri, out_dir=str(tmp_path / "here"))
    monkeypatch.setenv("ARGUANA_DIR", str(tmp_path / "no-corpus"))
    monkeypatch.chdir(tmp_path)
    hidden = {
        name: shutil.move(str(smoke_study.root / name), str(tmp_path / f"hidden-{name}")) for name in ("run", "corpus")
    }
    try:
        there = build_report("smoke", tracking_uri=uri, out_dir=str(tmp_path / "there"))
    finally:
        for name, where in hidden.items():
            shutil.move(where, str(smoke_study.root / name))
    strip = lambda text: re.sub(r"started \S+ \S+", "", text)  # noqa: E731 - the report's own build time
    assert strip(Path(there.markdown).read_text()) == strip(Path(here.markdown).read_text())
    assert Path(there.summary).read_text() == Path(here.summary).read_text()
