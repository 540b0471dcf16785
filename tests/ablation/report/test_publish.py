"""The report's numbers in MLflow: arm runs carry the means over seeds, the study run the headline
comparison, exactly as the report's tables have them, and a rebuild recomputes them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from ablation.report.build import build_report
from tests.conftest import SmokeStudy


def _runs(client: MlflowClient, role: str) -> list:
    exp = client.get_experiment_by_name("smoke")
    return client.search_runs([exp.experiment_id], f"tags.role = '{role}'")


@pytest.mark.slow
def test_arm_and_study_runs_carry_the_report_numbers_and_a_rebuild_recomputes_them(
    smoke_study: SmokeStudy, tmp_path: Path
) -> None:
    shutil.copy(smoke_study.root / "mlflow.db", tmp_path / "mlflow.db")  # the report writes metrics: a copy
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    table = pd.read_csv(build_report("smoke", tracking_uri=uri, out_dir=str(tmp_path / "report")).summary)
    arms = {r.data.tags["arm"]: r for r in _runs(client, "arm")}
    test = table[(table["kind"] == "test") & table["arm"].isin(list(arms))]
    assert len(test) > 100
    for _, row in test.iterrows():
        prefix = "" if row["slice"] == "all" else f"{row['slice']}/"
        key = f"test/{prefix}{row['mode']}/{row['metric']}/{row['task']}"
        metrics = arms[row["arm"]].data.metrics
        assert metrics[key] == row["mean"] and metrics[f"{key}_std"] == row["std"], key
        assert metrics[f"{key}_n"] == row["n_seeds"] == 2
    study = _runs(client, "study")[0].data.metrics
    headline = table[(table["kind"] == "comparison") & (table["family"] == "headline")]
    assert len(headline) == 4  # unshared minus shared: all and unseen queries, retrieval and rerank
    for _, row in headline.iterrows():
        key = f"compare/unshared_minus_shared/{row['slice']}/{row['mode']}/acc_at_1/mean"
        assert study[key] == row["diff"]
        assert (study[f"{key}_ci_low"], study[f"{key}_ci_high"]) == (row["ci_low"], row["ci_high"])
        assert study[f"{key}_p_holm"] == row["p_adjusted"] and study[f"{key}_n_seeds"] == 2
    # arm runs: the best parameters as params, the mean validation curve over the final seeds as a history
    key = "val/retrieval/acc_at_1/mean"
    for arm, run in arms.items():
        assert "negatives.random_rate" in client.get_run(run.info.run_id).data.params
        # the report draws the tuning figures (figure code lives in report/) and logs them on the arm run
        assert {"optuna_history.png", "objective_vs_random_rate.png"} <= {
            a.path for a in client.list_artifacts(run.info.run_id)
        }
        curves = [
            {m.step: m.value for m in client.get_metric_history(r.info.run_id, key)}
            for r in _runs(client, "final")
            if r.data.tags["arm"] == arm
        ]
        mean = {m.step: m.value for m in client.get_metric_history(run.info.run_id, key)}
        assert sorted(mean) == sorted(curves[0]) and len(mean) > 1
        assert all(abs(mean[s] - sum(c[s] for c in curves) / len(curves)) < 1e-12 for s in mean)
    # the verdict is what MLflow shows first: the study run's and the experiment's description
    verdict = Path(tmp_path / "report" / "report.md").read_text().split("## Verdict", 1)[1].split("##", 1)[0]
    note = _runs(client, "study")[0].data.tags["mlflow.note.content"]
    assert "Question: does shared" in note and note in verdict
    assert client.get_experiment_by_name("smoke").tags["mlflow.note.content"] == note

    # one seed's final run gone (as if it were redone): a rebuild logs the aggregates of what is left
    gone, kept = sorted(
        (r for r in _runs(client, "final") if r.data.tags["arm"] == "unshared"), key=lambda r: r.data.tags["seed"]
    )
    client.delete_run(gone.info.run_id)
    build_report("smoke", tracking_uri=uri, out_dir=str(tmp_path / "again"))
    metrics = client.get_run(arms["unshared"].info.run_id).data.metrics
    key = "test/retrieval/acc_at_1/mean"
    assert metrics[f"{key}_n"] == 1 and metrics[key] == kept.data.metrics[key] and metrics[f"{key}_std"] == 0


def test_every_run_says_what_it_is_and_the_experiment_is_model_training(smoke_study: SmokeStudy) -> None:
    client = MlflowClient(smoke_study.uri)
    exp = client.get_experiment_by_name("smoke")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    notes = {}
    for run in client.search_runs([exp.experiment_id], max_results=1000):
        notes.setdefault(run.data.tags["role"], []).append(run.data.tags.get("mlflow.note.content", ""))
    assert set(notes) == {"study", "arm", "trial", "final"}
    assert all(notes[role] for role in notes) and all(all(n for n in notes[role]) for role in notes)
    assert any("Arm unshared: separate towers" in n for n in notes["arm"])
    assert all(n.startswith("Final run of") and "seed" in n and "random_rate=" in n for n in notes["final"])
    assert all(n.startswith("Tuning trial of") and "trial " in n for n in notes["trial"])
