"""A training run in MLflow: params, tags, every metric family, artifacts; failures end the run."""

from __future__ import annotations

from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from ablation.cli.main import main
from ablation.study.tracked_run import train_and_track
from ablation.tracking.store import Tracker, artifact_location, resolve_tracking_uri
from tests.conftest import SMOKE, smoke_config


def test_uri_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///env.db")
    assert resolve_tracking_uri("sqlite:///cli.db", "sqlite:///cfg.db") == "sqlite:///cli.db"
    assert resolve_tracking_uri(None, "sqlite:///cfg.db") == "sqlite:///env.db"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert resolve_tracking_uri(None, "sqlite:///cfg.db") == "sqlite:///cfg.db"
    assert resolve_tracking_uri(None, None).endswith("/mlflow.db")
    assert artifact_location("sqlite:////tmp/x/mlflow.db") == "file:///tmp/x/mlartifacts"


def test_run_records_every_metric_family(corpus: Path, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cfg = smoke_config(**{"model.sharing": "unshared"})
    result = train_and_track(cfg, corpus=str(corpus), tracking_uri=uri)
    client = MlflowClient(uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.lr"] == str(cfg.train.lr) and run.data.params["model.sharing"] == "unshared"
    for tag in ("arm", "seed", "git_commit", "corpus_digest", "device", "checksum.query_encoder"):
        assert tag in run.data.tags, tag
    keys = set(run.data.metrics)
    families = [
        "params/unique",
        "params/trainable",
        "params/query_side",
        "params/candidate_side",
        "loss/total",
        "loss/triplet",
        "loss/ce_pos",
        "loss/ce_neg",
        "lr",
        "grad_norm/total",
        "grad_norm/query_encoder",
        "grad_norm/candidate_head",
        "grad_norm/classifier",
        "grad_cosine/query_vs_candidate",
        "encoder_distance",
        "val/rerank/acc_at_1/mean",
        "val/retrieval/recall_at_5/sdc",
        "neg/fraction_random",
        "neg/mean_distance",
        "time/epoch_s",
        "test/rerank/acc_at_1/epa",
        "test/retrieval/mrr/stc",
    ]
    assert not [f for f in families if f not in keys]
    steps = client.get_metric_history(result.run_id, "loss/total")
    assert len(steps) == len(result.losses) and [m.step for m in steps] == list(range(len(result.losses)))
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"config.yaml", "per_query_test.csv"} <= artifacts
    assert (tmp_path / "mlartifacts").is_dir()


def test_bad_input_leaves_no_run_and_a_crash_leaves_a_failed_one(corpus: Path, tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code = main(["train", "--config", str(SMOKE), "--corpus", str(tmp_path / "missing"), "--tracking-uri", uri])
    assert code == 2
    tracker = Tracker(uri)
    assert tracker.client.get_experiment_by_name("smoke") is None
    with pytest.raises(RuntimeError, match="boom"), tracker.run("smoke", "crash", {"arm": "shared"}):
        raise RuntimeError("boom")
    runs = tracker.client.search_runs([tracker.experiment_id("smoke")])
    assert [r.info.status for r in runs] == ["FAILED"] and "boom" in runs[0].data.tags["failure"]


def test_default_store_lies_in_the_repository_root(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import REPO

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri() == f"sqlite:///{REPO / 'mlflow.db'}"
    assert (REPO / "pyproject.toml").is_file()


def test_searches_quote_tag_values(tmp_path: Path) -> None:
    from ablation.tracking.store import quote

    assert quote("plain") == "'plain'" and quote("it's") == '"it\'s"' and quote('say "hi"') == "'say \"hi\"'"
    with pytest.raises(ValueError, match="both kinds of quote"):
        quote('it\'s "both"')
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    for study in ("it's", 'say "hi"', "back\\slash", "it"):
        tracker.find_or_create_run("exp", study, {"study": study, "role": "study"})
    for study in ("it's", 'say "hi"', "back\\slash", "it"):
        found = tracker.search("exp", {"study": study})
        assert [r.data.tags["study"] for r in found] == [study]
    assert tracker.search("no such experiment", {"study": "it"}) == []
    assert len(tracker.search(None, {"role": "study"})) == 4


def test_system_metrics_are_sampled_while_a_run_lasts_and_off_when_asked(tmp_path: Path) -> None:
    import time

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}")
    wanted = {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"}
    with tracker.run("sys", "on", {"role": "test"}, system_metrics_s=0.2) as rec:
        deadline = time.monotonic() + 120  # only ends a hung test: the assertion is that samples arrive
        while not wanted <= set(tracker.client.get_run(rec.run_id).data.metrics):
            assert time.monotonic() < deadline, "no system metrics were sampled while the run lasted"
            time.sleep(0.2)
    with tracker.run("sys", "off", {"role": "test"}) as off:
        pass
    on_metrics = tracker.client.get_run(rec.run_id).data.metrics
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(on_metrics)
    assert not [k for k in tracker.client.get_run(off.run_id).data.metrics if k.startswith("system/")]
    exp = tracker.client.get_experiment_by_name("sys")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # the UI opens on the runs
