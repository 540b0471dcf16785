"""One run of one arm: seeding, the training loop with per-step recording, per-epoch validation and
negative refresh, and the final test evaluation on all 8 tasks.

Determinism: the seed fixes Python/NumPy/torch; batches and negatives come from NumPy generators derived
from it, and torch is re-seeded after the model is built, so every arm under one seed starts from the
same weights and sees the same batches, negatives and dropout masks.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from ablation import encoders
from ablation.config import ExperimentConfig, dump_yaml, flatten
from ablation.data.batching import bucketed_batches
from ablation.data.prefix_cache import PrefixStore, prefix_digest, split_texts
from ablation.data.run_data import RunData
from ablation.evaluation.trained import SideTexts, TrainedEvaluator, encode_sides, token_texts
from ablation.io import REPO_ROOT
from ablation.names import TASKS
from ablation.runtime import (
    autocast,
    check_precision,
    describe_device,
    describe_precision,
    deterministic,
    resolve_device,
    seed_everything,
)
from ablation.training.diagnostics import backward_by_side, checksums, encoder_distance, grad_norms, param_counts
from ablation.training.negatives import Forbidden, mine, random_rates
from ablation.training.recorder import Recorder
from models.biencoder import BiEncoder
from models.heads import pca_projection
from models.losses.registry import SIMILARITY, build_loss

DEFAULT_CACHE = REPO_ROOT / "runs" / "prefix-cache"
EPOCH_MEANS = ("epoch/loss/total", "epoch/grad_norm/total")
"""Each epoch's mean training loss and pre-clip gradient norm, recorded at the epoch's step beside its
validation metrics, so that all three read per epoch."""
"""Where frozen-prefix caches go unless `data.cache_dir` names a folder (one file per model, depth and split)."""

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


def _digest(arrays: list[np.ndarray]) -> str:
    """sha256 (first 16 hex digits) of a list of index arrays, in order."""
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.asarray(a, dtype=np.int64).tobytes() + b"|")
    return h.hexdigest()[:16]


class Trainer:
    """One run of one arm. `fit(recorder)` validates before any step, trains, validates after each epoch
    and (with `run_test`) evaluates on the test split; `encode_training_split` and `train_step` are its
    parts, public for benchmarks and custom loops."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        data: RunData,
        on_epoch: EpochCallback | None = None,
        run_test: bool = True,
    ) -> None:
        self.cfg = cfg
        self.run_test = run_test  # tuning trials skip the test split: they are chosen on validation only
        self.data = data
        self.on_epoch = on_epoch
        self.device = resolve_device(cfg.train.device)
        check_precision(self.device, cfg.train.precision)  # `ablation train` and tests come here directly
        deterministic(self.device)
        seed_everything(cfg.seed)
        self.batch_rng = np.random.default_rng([cfg.seed, 1])
        self.neg_rng = np.random.default_rng([cfg.seed, 2])
        self.model = build_model(cfg, data, self.device)
        t = cfg.train
        self.loss_fn = build_loss(t.loss, t.triplet_margin, t.contrastive_scale)
        self.similarity = SIMILARITY[t.loss]  # what retrieval and negative mining rank by
        self.optimizer = _optimizer(cfg, self.model)
        warm = cfg.train.warmup_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: min(1.0, (s + 1) / (warm + 1)))
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.device.type == "cuda" and cfg.train.precision == "fp16")
        self.forbidden = Forbidden.from_codes(data.train.split.text_codes)
        self.texts = self._side_texts()
        self.evaluator = TrainedEvaluator(
            self.model, self.texts, cfg.eval.batch_size, self.device, cfg.train.precision, self.similarity
        )
        self.step = 0
        self.clipped_steps = 0  # steps whose pre-clip gradient norm exceeded train.grad_clip
        self.epoch_sums = dict.fromkeys(EPOCH_MEANS, 0.0)
        self.epoch_copies = 0  # in-batch candidates masked as copies of a query's counter or itself
        self.result = TrainResult()

    def _side_texts(self) -> SideTexts:
        """How the model reads each split: through the frozen-prefix cache when the embeddings and bottom
        layers are frozen (`model.prefix_cache`), else as token ids."""
        tower, data = self.model.query_tower, self.data
        if not (self.cfg.model.prefix_cache and tower.prefix_layers):
            return token_texts(data.pad_id)
        folder = Path(self.cfg.data.cache_dir) if self.cfg.data.cache_dir else DEFAULT_CACHE
        batch, prefix = self.cfg.eval.batch_size, prefix_digest(tower)  # the weights, hashed once for all splits
        stores = {
            id(split): split_texts(
                PrefixStore.build_or_load(folder, tower, split.cand_tokens, data.pad_id, batch, self.device, prefix),
                split.split.n,
            )
            for split in (data.train, data.val, *((data.test,) if self.run_test else ()))
        }
        return lambda split: stores[id(split)]

    def _record_setup(self, recorder: Recorder) -> None:
        cfg, data = self.cfg, self.data
        self.result.counts = param_counts(self.model)
        self.result.sums = checksums(self.model)
        sizes = {f"data.{name}_queries": getattr(data, name).split.n for name in ("train", "val", "test")}
        recorder.log_params({**flatten(cfg), **sizes, "data.corpus_path": data.corpus})
        precision = describe_precision(self.device, self.cfg.train.precision)
        recorder.set_tags(
            {
                **self.result.sums,
                "device": describe_device(self.device),
                "precision": precision,
                "similarity": self.similarity,
                "torch_threads": str(torch.get_num_threads()),
            }
        )
        recorder.log_metrics(dict(self.result.counts), step=0)
        recorder.log_text(dump_yaml(cfg), "config.yaml")

    def encode_training_split(self, init_heads: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Projected vectors of training queries (query side) and candidates (candidate side), no dropout;
        with `init_heads` (before the first step), the heads are first set from the pooled vectors."""
        ev = self.evaluator
        q, c = encode_sides(
            self.model, *self.texts(self.data.train), ev.batch_size, self.device, ev.precision, "training"
        )
        if init_heads:
            weight, bias = pca_projection(torch.from_numpy(c["pool"]), self.cfg.model.proj_dim)
            self.model.init_heads(weight.to(self.device), bias.to(self.device))
            # every arm's towers are identical before the first step, so one fit serves both sides
            with torch.no_grad():
                q["proj"], c["proj"] = (
                    head(torch.from_numpy(v["pool"]).to(self.device)).float().cpu().numpy()
                    for head, v in ((self.model.query_head, q), (self.model.cand_head, c))
                )
        return self.mining_space(q["proj"]), self.mining_space(c["proj"])

    def mining_space(self, vectors: np.ndarray) -> np.ndarray:
        """Vectors as negative mining compares them: unit length under a cosine loss (L2 distance between
        unit vectors orders candidates as cosine does), as they are under the L2 loss."""
        if self.similarity != "cosine":
            return vectors
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)

    def copies(self, idx: np.ndarray, negatives: np.ndarray) -> np.ndarray:
        """[B, 2B] mask of the in-batch candidates (the batch's counters, then its mined negatives) whose text
        equals query i's counter or query i's own text, other than query i's counter itself (its target)."""
        codes, n = self.data.train.split.text_codes, self.data.train.split.n
        cand = codes[np.concatenate([idx, negatives[idx]])]
        own = (cand[None, :] == codes[idx][:, None]) | (cand[None, :] == codes[n + idx][:, None])
        own[np.arange(len(idx)), np.arange(len(idx))] = False
        return own

    def train_step(
        self,
        idx: np.ndarray,
        negatives: np.ndarray,
        recorder: Recorder,
        vectors: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> float:
        """One optimisation step on the training queries `idx`, their counters and `negatives[idx]`; with
        `vectors`, the step's projected vectors (dropout on) replace those rows for the next mining."""
        cfg, dev = self.cfg, self.device
        queries, candidates = self.texts(self.data.train)
        batches = (queries.batch(idx), candidates.batch(idx), candidates.batch(negatives[idx]))
        q, p, n = ({k: v.to(dev, non_blocking=True) for k, v in b.items()} for b in batches)
        copies = self.copies(idx, negatives) if cfg.train.loss == "contrastive" else None
        with autocast(self.device, cfg.train.precision):
            out = self.model(q, p, n)
            terms = self.loss_fn(out, None if copies is None else torch.from_numpy(copies).to(dev))
        total = terms["total"]
        value = float(total.detach())
        if not math.isfinite(value):
            raise NonFiniteLoss(f"loss became {value} at step {self.step}")
        metrics = {f"loss/{k}": float(v.detach()) for k, v in terms.items()}
        if copies is not None:
            metrics["batch/copies_masked"] = float(copies.sum())
            self.epoch_copies += int(copies.sum())
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
            clipped = metrics["grad_norm/total"] > cfg.train.grad_clip
            metrics["grad/clipped"] = float(clipped)
            self.clipped_steps += int(clipped)
        metrics["lr"] = self.optimizer.param_groups[0]["lr"]
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        if vectors is not None:
            vectors[0][idx] = self.mining_space(out.query_proj.detach().float().cpu().numpy())
            vectors[1][idx] = self.mining_space(out.pos_proj.detach().float().cpu().numpy())
            vectors[1][negatives[idx]] = self.mining_space(out.neg_proj.detach().float().cpu().numpy())
        recorder.log_metrics(metrics, self.step)
        self.epoch_sums["epoch/loss/total"] += value
        self.epoch_sums["epoch/grad_norm/total"] += metrics["grad_norm/total"]
        self.result.losses.append(value)
        self.step += 1
        return value

    def validate(self, epoch: int, recorder: Recorder) -> dict[str, float]:
        """Validation metrics after `epoch` epochs (0: before any step), recorded at that step."""
        ev = self.cfg.eval
        res = self.evaluator.evaluate(self.data.val, ev.val_tasks, ev.ks, ev.rerank_k)
        metrics = {f"val/{k}": v for k, v in res.metrics.items()}
        recorder.log_metrics(metrics, step=epoch)
        self.result.val_history.append(metrics)
        return metrics

    def fit(self, recorder: Recorder) -> TrainResult:
        """Validate the model before any step (epoch 0), train all epochs, validating after each (epoch
        e = e epochs done), then evaluate on the test split (all 8 tasks). Each epoch's batches and
        negatives are recorded as digests (tags `digest.*`): arms under one seed must show the same."""
        cfg, tr = self.cfg, self.data.train
        reuse = cfg.negatives.reuse_train_embeddings
        self.model.train()
        vectors = self.encode_training_split(init_heads=cfg.model.head_init == "pca")  # before the checksums
        self._record_setup(recorder)
        self.validate(0, recorder)
        lengths = [len(t) for t in tr.query_tokens]
        total_steps = None
        for epoch in range(1, cfg.train.epochs + 1):
            start = time.perf_counter()
            batches = bucketed_batches(lengths, cfg.train.batch_size, cfg.train.bucket_size, self.batch_rng)
            total_steps = total_steps or len(batches) * cfg.train.epochs  # the same count every epoch
            refresh = time.perf_counter()
            if epoch > 1 and not reuse:
                vectors = self.encode_training_split()
            step_of = np.empty(tr.split.n, dtype=np.int64)  # the step at which each query's batch runs
            for b, idx in enumerate(batches):
                step_of[idx] = self.step + b
            rates = random_rates(step_of, total_steps, cfg.negatives.random_rate, cfg.negatives.random_rate_final)
            negs = mine(vectors[0], vectors[1], rates, self.neg_rng, self.forbidden, cfg.negatives.index)
            refresh = time.perf_counter() - refresh
            recorder.set_tags(
                {
                    f"digest.batches.epoch{epoch}": _digest(batches),
                    f"digest.negatives.epoch{epoch}": _digest([negs.index]),
                }
            )
            desc = f"{cfg.model.sharing} seed {cfg.seed} epoch {epoch}/{cfg.train.epochs}"
            self.epoch_sums = dict.fromkeys(EPOCH_MEANS, 0.0)
            self.epoch_copies = 0
            bar = tqdm(batches, desc=desc, unit="step", leave=False, disable=None)
            for idx in bar:  # with reuse, the steps update `vectors` in place (mining is done with them)
                loss = self.train_step(idx, negs.index, recorder, vectors if reuse else None)
                bar.set_postfix(loss=f"{loss:.3f}")
            train_time = time.perf_counter() - start
            val = self.validate(epoch, recorder)
            times = {
                "time/epoch_s": time.perf_counter() - start,
                "time/train_s": train_time,
                "time/negative_refresh_s": refresh,
            }
            times.update({k: v / len(batches) for k, v in self.epoch_sums.items()})
            if cfg.train.loss == "contrastive":  # as the mining counts the copies it passes over
                times["neg/inbatch_copies_masked"] = float(self.epoch_copies)
            if cfg.train.grad_clip is not None:  # share of the steps so far that were clipped
                times["grad/clipped_share"] = self.clipped_steps / max(1, self.step)
            recorder.log_metrics({**negs.stats(), **times}, step=epoch)
            recorder.flush()
            if self.on_epoch is not None:
                self.on_epoch(epoch, val)
        return self._evaluate_test(recorder) if self.run_test else self.result

    def _evaluate_test(self, recorder: Recorder) -> TrainResult:
        ev = self.cfg.eval
        res = self.evaluator.evaluate(self.data.test, TASKS, ev.ks, ev.rerank_k)
        self.result.test_metrics = {f"test/{k}": v for k, v in {**res.metrics, **res.slice_sizes}.items()}
        self.result.per_query = res.per_query
        recorder.log_metrics(self.result.test_metrics, step=self.cfg.train.epochs)
        recorder.log_text(res.per_query.to_csv(index=False), "per_query_test.csv")
        recorder.flush()
        return self.result
