"""One training run recorded in MLflow: the tags every run carries, and `tracked_fit`, which opens a tracked
run and fits (tuning trials, final runs and `ablation train` all go through it)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optuna
import torch

from ablation.config import ExperimentConfig
from ablation.data.run_data import RunData, load_run_data
from ablation.io import git_commit
from ablation.names import Role
from ablation.study.preflight import preflight_run
from ablation.tracking.store import NOTE_TAG, Tracker, resolve_tracking_uri
from ablation.training.trainer import EpochCallback, Trainer, TrainResult


def run_tags(cfg: ExperimentConfig, data: RunData) -> dict[str, str]:
    """Tags every training run carries."""
    return {
        "arm": cfg.model.sharing,
        "seed": str(cfg.seed),
        "git_commit": git_commit(),
        "corpus_digest": data.digest,
        "model": cfg.model.name,
    }


SIDES = {
    "shared": "one encoder shared by argument and candidate (Siamese)",
    "unshared": "separate towers",
    "shared_projection": "separate towers with one shared similarity head",
    "shared_embeddings": "separate towers sharing the token embeddings",
    "frozen_candidate": "separate towers with the candidate side frozen",
}


def describe(
    role: Role, arm: str, seed: int | None = None, params: dict[str, float] | None = None, **extra: str
) -> str:
    """The run's one-line description for the MLflow UI (`mlflow.note.content`)."""
    what = {
        Role.STUDY: "Study: every arm tuned, then retrained under each seed",
        Role.ARM: f"Arm {arm}: {SIDES.get(arm, arm)}; its metrics are means over the final seeds (_std, _n beside)",
        Role.TRIAL: f"Tuning trial of {arm}",
        Role.FINAL: f"Final run of {arm}",
        Role.ZERO_SHOT: "Zero-shot reference: the pretrained encoder, untrained, on validation and test",
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


def tracked_fit(
    tracker: Tracker,
    cfg: ExperimentConfig,
    data: RunData,
    experiment: str,
    name: str,
    tags: dict[str, Any],
    parent: str | None = None,
    on_epoch: EpochCallback | None = None,
    run_test: bool = True,
    guard: Callable[[], None] | None = None,
    on_create: Callable[[str], None] | None = None,
) -> tuple[TrainResult, str]:
    """Train `cfg` as one MLflow run and return its result and state: `complete`, or `pruned` when
    `on_epoch` raised optuna.TrialPruned (a normal outcome: the run ends FINISHED, tagged pruned). The model
    and data are set up before the run exists, so a failure there leaves no run."""
    trainer = Trainer(cfg, data, on_epoch, run_test=run_test)
    all_tags = {**run_tags(cfg, data), **tags}
    state = "complete"
    with tracker.run(experiment, name, all_tags, parent, system_metrics_s(cfg), guard, on_create) as recorder:
        try:
            trainer.fit(recorder)
        except optuna.TrialPruned:
            state = "pruned"
        recorder.set_tags({"state": state})
        trainer.result.run_id = recorder.run_id
    return trainer.result, state


def train_and_track(cfg: ExperimentConfig, corpus: str | None = None, tracking_uri: str | None = None) -> TrainResult:
    """`ablation train`: one arm under one seed as an MLflow run. Bad input leaves no run."""
    uri = resolve_tracking_uri(tracking_uri, cfg.tracking.uri)
    preflight_run(cfg, uri)
    torch.set_num_threads(cfg.train.threads)  # as a study's runs do: the numbers depend on it
    data = load_run_data(cfg, corpus)
    tags = {NOTE_TAG: describe(Role.FINAL, cfg.model.sharing, cfg.seed)}
    experiment = cfg.tracking.experiment or cfg.study.name
    name = f"{cfg.model.sharing}-seed{cfg.seed}"
    return tracked_fit(Tracker(uri), cfg, data, experiment, name, tags)[0]
