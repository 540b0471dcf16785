"""One training run recorded in MLflow: the tags every run carries, and `ablation train`."""

from __future__ import annotations

from ablation.config import ExperimentConfig
from ablation.data.run_data import RunData, load_run_data
from ablation.runtime import resolve_device
from ablation.study.preflight import check_tracking_uri
from ablation.tracking.store import Tracker, git_commit, resolve_tracking_uri
from ablation.training.trainer import Trainer, TrainResult


def run_tags(cfg: ExperimentConfig, data: RunData) -> dict[str, str]:
    """Tags every training run carries."""
    return {
        "arm": cfg.model.sharing,
        "seed": str(cfg.seed),
        "git_commit": git_commit(),
        "corpus_digest": data.digest,
        "model": cfg.model.name,
    }


def train_and_track(cfg: ExperimentConfig, corpus: str | None = None, tracking_uri: str | None = None) -> TrainResult:
    """Train one arm under one seed as an MLflow run. Data and model are loaded before the run is created,
    so bad input leaves no run."""
    uri = resolve_tracking_uri(tracking_uri, cfg.tracking.uri)
    resolve_device(cfg.train.device)
    check_tracking_uri(uri)
    data = load_run_data(cfg, corpus)
    tracker = Tracker(uri)
    trainer = Trainer(cfg, data)
    experiment = cfg.tracking.experiment or cfg.study.name
    with tracker.run(experiment, f"{cfg.model.sharing}-seed{cfg.seed}", run_tags(cfg, data)) as recorder:
        result = trainer.fit(recorder)
        result.run_id = recorder.run_id
    return result
