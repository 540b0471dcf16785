"""One training run recorded in MLflow: the tags every run carries, and `ablation train`."""

from __future__ import annotations

from ablation.config import ExperimentConfig
from ablation.data.run_data import RunData, load_run_data
from ablation.runtime import resolve_device
from ablation.study.preflight import check_tracking_uri
from ablation.tracking.store import NOTE_TAG, Tracker, git_commit, resolve_tracking_uri
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


SIDES = {"shared": "one encoder shared by argument and candidate (Siamese)", "unshared": "separate towers"}


def describe(role: str, arm: str, seed: int | None = None, params: dict[str, float] | None = None, **extra: str) -> str:
    """The run's one-line description for the MLflow UI (`mlflow.note.content`)."""
    what = {
        "study": "Study: every arm tuned, then retrained under each seed",
        "arm": f"Arm {arm}: {SIDES.get(arm, arm)}; its metrics are means over the final seeds (_std, _n beside)",
        "trial": f"Tuning trial of {arm}",
        "final": f"Final run of {arm}",
        "zero-shot": "Zero-shot reference: the pretrained encoder, untrained, on validation and test",
    }.get(role, role)
    parts = [what]
    if seed is not None:
        parts.append(f"seed {seed}")
    if params:
        parts.append(", ".join(f"{k.split('.')[-1]}={v:.3g}" for k, v in sorted(params.items())))
    parts += [f"{k}: {v}" for k, v in extra.items()]
    return "; ".join(parts) + "."


def system_metrics_s(cfg: ExperimentConfig) -> float | None:
    """How often MLflow samples CPU and memory of a training run (None: off)."""
    return cfg.tracking.system_metrics_interval_s if cfg.tracking.system_metrics else None


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
    tags = {**run_tags(cfg, data), NOTE_TAG: describe("final", cfg.model.sharing, cfg.seed)}
    with tracker.run(
        experiment, f"{cfg.model.sharing}-seed{cfg.seed}", tags, system_metrics_s=system_metrics_s(cfg)
    ) as recorder:
        result = trainer.fit(recorder)
        result.run_id = recorder.run_id
    return result
