"""One run of one arm: seeding, the training loop with per-step recording, per-epoch validation and
negative refresh, and the final test evaluation on all 8 tasks.

Determinism: the seed fixes Python/NumPy/torch; batches and negatives come from NumPy generators derived
from it, and torch is re-seeded after the model is built, so every arm under one seed starts from the
same weights and sees the same batches, negatives and dropout masks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ablation import encoders
from ablation.config import ExperimentConfig, dump_yaml, flatten
from ablation.data.batching import bucketed_batches, pad_batch
from ablation.data.run_data import RunData, load_run_data
from ablation.data.tasks import TASKS
from ablation.evaluation.trained import encode_sides, evaluate_model
from ablation.runtime import autocast, describe_device, resolve_device, seed_everything
from ablation.training.diagnostics import backward_by_side, checksums, encoder_distance, grad_norms, param_counts
from ablation.training.negatives import Forbidden, mine, random_rates
from ablation.training.recorder import MemoryRecorder, Recorder
from models.biencoder import BiEncoder
from models.heads import pca_projection
from models.loss import TripletPairLoss

EpochCallback = Callable[[int, dict[str, float]], None]
"""Called after each epoch's validation with (epochs done, val metrics); may raise to stop the run (pruning)."""


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class TrainResult:
    """What a finished run produced."""

    val_history: list[dict[str, float]] = field(default_factory=list)
    test_metrics: dict[str, float] = field(default_factory=dict)
    per_query: pd.DataFrame | None = None
    counts: dict[str, int] = field(default_factory=dict)
    sums: dict[str, str] = field(default_factory=dict)
    losses: list[float] = field(default_factory=list)
    run_id: str | None = None


def _optimizer(cfg: ExperimentConfig, model: BiEncoder) -> torch.optim.Optimizer:
    """The optimizer over every trainable tensor once; heads and classifier may use their own lr."""
    t = cfg.train
    towers = {id(p) for m in (model.query_tower, model.cand_tower) for p in m.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in trainable if id(p) in towers], "lr": t.lr},
        {"params": [p for p in trainable if id(p) not in towers], "lr": t.head_lr if t.head_lr is not None else t.lr},
    ]
    groups = [g for g in groups if g["params"]]
    if t.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=t.lr, weight_decay=t.weight_decay)
    cls = torch.optim.AdamW if t.optimizer == "adamw" else torch.optim.Adam
    return cls(groups, lr=t.lr, weight_decay=t.weight_decay)


def build_model(cfg: ExperimentConfig, data: RunData, device: torch.device) -> BiEncoder:
    """The arm's model, from the same weights for every arm under `cfg.seed`; torch is re-seeded after."""
    torch.manual_seed(cfg.seed)
    model = encoders.biencoder(cfg.model, len(data.tokenizer)).to(device).train()  # from_pretrained gives eval mode
    torch.manual_seed(cfg.seed)  # dropout masks independent of how much RNG building consumed
    return model


class Trainer:
    """Holds one run's state; `fit()` trains, validates each epoch, and evaluates on test."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        data: RunData,
        recorder: Recorder,
        on_epoch: EpochCallback | None = None,
        test: bool = True,
    ) -> None:
        self.cfg = cfg
        self.test = test  # tuning trials skip the test split: they are chosen on validation only
        self.data = data
        self.rec = recorder
        self.on_epoch = on_epoch
        self.device = resolve_device(cfg.train.device)
        seed_everything(cfg.seed)
        self.batch_rng = np.random.default_rng([cfg.seed, 1])
        self.neg_rng = np.random.default_rng([cfg.seed, 2])
        self.model = build_model(cfg, data, self.device)
        self.loss_fn = TripletPairLoss(margin=1.0)
        self.optimizer = _optimizer(cfg, self.model)
        warm = cfg.train.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: min(1.0, (s + 1) / (warm + 1)))
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.device.type == "cuda" and cfg.train.precision == "fp16")
        self.forbidden = Forbidden.from_codes(data.train.split.text_codes)
        self.step = 0
        self.result = TrainResult()
        self.epoch_batches: list[list[np.ndarray]] = []  # what the run saw, for inspection and tests
        self.epoch_negatives: list[np.ndarray] = []

    def _record_setup(self) -> None:
        cfg, data = self.cfg, self.data
        self.result.counts = param_counts(self.model)
        self.result.sums = checksums(self.model)
        self.rec.log_params(
            {
                **flatten(cfg),
                "data.train_queries": data.train.split.n,
                "data.val_queries": data.val.split.n,
                "data.test_queries": data.test.split.n,
                "data.corpus_path": data.corpus,
            }
        )
        self.rec.set_tags({**self.result.sums, "device": describe_device(self.device)})
        self.rec.log_metrics(dict(self.result.counts), step=0)
        self.rec.log_text(dump_yaml(cfg), "config.yaml")

    def _train_vectors(self, init_heads: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Projected vectors of training queries (query side) and candidates (candidate side), no dropout;
        with `init_heads` (before the first step), the heads are first set from the pooled vectors."""
        q, c = encode_sides(
            self.model,
            self.data.train,
            self.data.pad_id,
            self.cfg.eval.batch_size,
            self.device,
            self.cfg.train.precision,
        )
        if init_heads:
            self.model.init_heads(
                *(t.to(self.device) for t in pca_projection(torch.from_numpy(c["pool"]), self.cfg.model.proj_dim))
            )
            with (
                torch.no_grad()
            ):  # every arm's towers are identical before the first step, so one fit serves both sides
                q["proj"], c["proj"] = (
                    head(torch.from_numpy(v["pool"]).to(self.device)).float().cpu().numpy()
                    for head, v in ((self.model.query_head, q), (self.model.cand_head, c))
                )
        return q["proj"], c["proj"]

    def _step(self, idx: np.ndarray, negatives: np.ndarray, cache: tuple[np.ndarray, np.ndarray] | None) -> float:
        cfg, tr = self.cfg, self.data.train
        pad, dev = self.data.pad_id, self.device
        batches = [
            pad_batch([toks[i] for i in ids], pad)
            for toks, ids in ((tr.query_tokens, idx), (tr.cand_tokens, idx), (tr.cand_tokens, negatives[idx]))
        ]
        q, p, n = ({k: v.to(dev, non_blocking=True) for k, v in b.items()} for b in batches)
        with autocast(self.device, cfg.train.precision):
            out = self.model(q, p, n)
            terms = self.loss_fn(out)
        total = terms["total"]
        value = float(total.detach())
        if not math.isfinite(value):
            raise NonFiniteLoss(f"loss became {value} at step {self.step}")
        metrics = {f"loss/{k}": float(v.detach()) for k, v in terms.items()}
        every = cfg.train.grad_cosine_every
        self.optimizer.zero_grad(set_to_none=True)
        if every and self.step % every == 0:  # a backward per side instead of one backward: same cost
            metrics["grad_cosine/query_vs_candidate"] = backward_by_side(self.model, out, self.scaler.scale(total))
            metrics["encoder_distance"] = encoder_distance(self.model)
        else:
            self.scaler.scale(total).backward()
        self.scaler.unscale_(self.optimizer)
        metrics.update(grad_norms(self.model))
        if cfg.train.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad], cfg.train.grad_clip)
        metrics["lr"] = self.optimizer.param_groups[0]["lr"]
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if cache is not None:  # training-pass vectors (dropout on) stand in for a re-encoding pass
            cache[0][idx] = out.query_proj.detach().float().cpu().numpy()
            cache[1][idx] = out.pos_proj.detach().float().cpu().numpy()
            cache[1][negatives[idx]] = out.neg_proj.detach().float().cpu().numpy()
        self.rec.log_metrics(metrics, self.step)
        self.result.losses.append(value)
        self.step += 1
        return value

    def validate(self, epoch: int) -> dict[str, float]:
        res = evaluate_model(
            self.model,
            self.data.val,
            self.data.pad_id,
            self.cfg.eval,
            self.device,
            self.cfg.eval.val_tasks,
            self.cfg.train.precision,
        )
        metrics = {f"val/{k}": v for k, v in res.metrics.items()}
        self.rec.log_metrics(metrics, step=epoch)
        self.result.val_history.append(metrics)
        return metrics

    def fit(self) -> TrainResult:
        """Validate the model before any step (epoch 0), train all epochs, validating after each (epoch
        e = e epochs done), then evaluate on the test split (all 8 tasks)."""
        cfg, tr = self.cfg, self.data.train
        reuse = cfg.negatives.reuse_train_embeddings
        self.model.train()
        vectors = self._train_vectors(init_heads=cfg.model.head_init == "pca")  # before the checksums are recorded
        self._record_setup()
        self.validate(0)
        lengths = [len(t) for t in tr.query_tokens]
        total_steps = None
        for epoch in range(cfg.train.epochs):
            start = time.perf_counter()
            batches = bucketed_batches(lengths, cfg.train.batch_size, cfg.train.bucket_size, self.batch_rng)
            total_steps = total_steps or len(batches) * cfg.train.epochs  # the same count every epoch
            refresh = time.perf_counter()
            if epoch and not reuse:
                vectors = self._train_vectors()
            step_of = np.empty(tr.split.n, dtype=np.int64)  # the step at which each query's batch runs
            for b, idx in enumerate(batches):
                step_of[idx] = self.step + b
            rates = random_rates(step_of, total_steps, cfg.negatives.random_rate, cfg.negatives.random_rate_final)
            negs = mine(vectors[0], vectors[1], rates, self.neg_rng, self.forbidden, cfg.negatives.index)
            refresh = time.perf_counter() - refresh
            self.epoch_batches.append(batches)
            self.epoch_negatives.append(negs.index)
            bar = tqdm(
                batches,
                desc=f"{cfg.model.sharing} seed {cfg.seed} epoch {epoch + 1}/{cfg.train.epochs}",
                unit="step",
                leave=False,
                disable=None,
            )
            for idx in bar:  # with reuse, the steps update `vectors` in place (mining is done with them)
                loss = self._step(idx, negs.index, vectors if reuse else None)
                bar.set_postfix(loss=f"{loss:.3f}")
            train_time = time.perf_counter() - start
            val = self.validate(epoch + 1)
            self.rec.log_metrics(
                {
                    **negs.stats(),
                    "time/epoch_s": time.perf_counter() - start,
                    "time/train_s": train_time,
                    "time/negative_refresh_s": refresh,
                },
                step=epoch + 1,
            )
            self.rec.flush()
            if self.on_epoch is not None:
                self.on_epoch(epoch + 1, val)
        return self._test() if self.test else self.result

    def _test(self) -> TrainResult:
        res = evaluate_model(
            self.model, self.data.test, self.data.pad_id, self.cfg.eval, self.device, TASKS, self.cfg.train.precision
        )
        self.result.test_metrics = {f"test/{k}": v for k, v in {**res.metrics, **res.slice_sizes}.items()}
        self.result.per_query = res.per_query
        self.rec.log_metrics(self.result.test_metrics, step=self.cfg.train.epochs)
        self.rec.log_text(res.per_query.to_csv(index=False), "per_query_test.csv")
        self.rec.flush()
        return self.result


def run_tags(cfg: ExperimentConfig, data: RunData) -> dict[str, str]:
    """Tags every training run carries."""
    from ablation.tracking.store import git_commit

    return {
        "arm": cfg.model.sharing,
        "seed": str(cfg.seed),
        "git_commit": git_commit(),
        "corpus_digest": data.digest,
        "model": cfg.model.name,
    }


def train_and_track(
    cfg: ExperimentConfig,
    corpus: str | None = None,
    tracking_uri: str | None = None,
    data: RunData | None = None,
    parent: str | None = None,
    tags: dict[str, str] | None = None,
    on_epoch: EpochCallback | None = None,
    run_name: str | None = None,
) -> TrainResult:
    """Train one arm under one seed as an MLflow run (data is loaded first: bad input leaves no run)."""
    from ablation.tracking.store import Tracker, resolve_tracking_uri

    data = data or load_run_data(cfg, corpus)
    tracker = Tracker(resolve_tracking_uri(tracking_uri, cfg.tracking.uri))
    experiment = cfg.tracking.experiment or cfg.study.name
    name = run_name or f"{cfg.model.sharing}-seed{cfg.seed}"
    trainer = Trainer(cfg, data, MemoryRecorder(), on_epoch)  # build before the run: model errors leave no run
    with tracker.run(experiment, name, {**run_tags(cfg, data), **(tags or {})}, parent) as rec:
        trainer.rec = rec
        result = trainer.fit()
        result.run_id = rec.run_id
    return result
