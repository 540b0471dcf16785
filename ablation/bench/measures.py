"""The measures of `make bench`, each a ratio taken side by side in one process (medians over repeats after
a warm-up), through the harness's public interfaces. `table.GOALS` says what each measure's id stands for."""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ablation.bench.per_pair import per_pair_accuracy
from ablation.config import ExperimentConfig, load_config, replace_path
from ablation.data.batching import TokenTexts, bucketed_batches
from ablation.data.corpus import Split
from ablation.data.prefix_cache import verify
from ablation.data.run_data import RunData
from ablation.evaluation.encoding import encode
from ablation.evaluation.ranking import evaluate_scores, score_matrix
from ablation.io import REPO_ROOT
from ablation.names import TASKS, Role
from ablation.runtime import autocast
from ablation.training.negatives import mine
from ablation.training.recorder import MemoryRecorder
from ablation.training.trainer import Trainer, build_model

QUICK = REPO_ROOT / "experiments" / "quick.yaml"
SMOKE = REPO_ROOT / "experiments" / "smoke.yaml"


def _median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _sync(device: torch.device) -> None:
    """Wait for queued CUDA work, so that a timer stops when the work is done rather than queued."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_batches(cfg: ExperimentConfig, data: RunData, n: int) -> list[np.ndarray]:
    """`n` training batches in the trainer's bucketed order (seed 0), over as many epochs as they need."""
    rng = np.random.default_rng(0)
    batches: list[np.ndarray] = []
    while len(batches) < n:
        batches += bucketed_batches(
            [len(t) for t in data.train.query_tokens], cfg.train.batch_size, cfg.train.bucket_size, rng
        )
    return batches[:n]


def step_overhead(cfg: ExperimentConfig, data: RunData, steps: int) -> dict:
    """P1: `Trainer.train_step` (recording to MLflow) vs a bare forward/backward/step on the same batches."""
    from ablation.study.tracked_run import system_metrics_s
    from ablation.tracking.store import Tracker

    with tempfile.TemporaryDirectory() as tmp:
        tracker = Tracker(f"sqlite:///{Path(tmp) / 'mlflow.db'}")
        trainer = Trainer(cfg, data)
        q, c = trainer.encode_training_split()
        negs = mine(q, c, cfg.negatives.random_rate, np.random.default_rng(0), trainer.forbidden).index
        batches = step_batches(cfg, data, steps + 1)
        bare_model = build_model(cfg, data, trainer.device).train()  # from_pretrained leaves encoders in eval mode
        bare_opt = torch.optim.Adam([p for p in bare_model.parameters() if p.requires_grad], lr=cfg.train.lr)
        queries, candidates = trainer.texts(data.train)  # the same inputs: token ids or the prefix cache

        def bare(idx: np.ndarray) -> None:
            b = [queries.batch(idx), candidates.batch(idx), candidates.batch(negs[idx])]
            with autocast(trainer.device, cfg.train.precision):  # the same precision as the harness step
                out = bare_model(*[{k: v.to(trainer.device) for k, v in x.items()} for x in b])
                loss = trainer.loss_fn(out)["total"]
            bare_opt.zero_grad(set_to_none=True)
            trainer.scaler.scale(loss).backward()
            if cfg.train.grad_clip is not None:
                trainer.scaler.unscale_(bare_opt)
                torch.nn.utils.clip_grad_norm_(bare_opt.param_groups[0]["params"], cfg.train.grad_clip)
            trainer.scaler.step(bare_opt)
            trainer.scaler.update()
            _sync(trainer.device)

        harness_t, bare_t = [], []
        # as a study runs it: with MLflow's system metrics sampled beside the steps, when the config has them
        with tracker.run("bench", "p1", {"role": Role.BENCH}, system_metrics_s=system_metrics_s(cfg)) as rec:
            trainer.train_step(batches[0], negs, rec)  # warm-up both
            bare(batches[0])
            for idx in batches[1:]:  # interleaved, so drift in machine speed hits both alike
                t = time.perf_counter()
                trainer.train_step(idx, negs, rec)
                _sync(trainer.device)
                harness_t.append(time.perf_counter() - t)
                t = time.perf_counter()
                bare(idx)
                bare_t.append(time.perf_counter() - t)
            t = time.perf_counter()
            rec.flush()
            flush = time.perf_counter() - t
    ratio = statistics.median(h / b for h, b in zip(harness_t, bare_t, strict=True))
    return {
        "id": "P1",
        "arm": cfg.model.sharing,
        "steps": len(harness_t),
        "harness_step_s": statistics.median(harness_t),
        "bare_step_s": statistics.median(bare_t),
        "final_flush_s": flush,
        "ratio": ratio,
        "goal": "<= 1.05",
        "met": ratio <= 1.05,
        "grad_cosine_every": cfg.train.grad_cosine_every,
        "system_metrics_s": system_metrics_s(cfg),
    }


def evaluation_speedup(cfg: ExperimentConfig, data: RunData, split: Split, repeats: int) -> dict:
    """All 8 tasks on a split: vectorised vs per-pair loops, same embeddings and top-K. In each of `repeats`
    rounds the per-pair evaluation (seconds) runs task by task, each task after a warm-up and three timed
    vectorised runs of all 8 tasks (milliseconds); the speed-up is the median over rounds of per-pair time /
    median vectorised time."""
    from ablation.evaluation.trained import pair_scorer

    rng = np.random.default_rng(0)
    model = build_model(replace_path(cfg, "model.sharing", "shared"), data, torch.device("cpu"))
    torch.nn.init.normal_(model.classifier.linear.weight, std=0.1)  # it starts at zero: every pair would tie
    hidden, proj = model.query_head.in_features, model.query_head.out_features
    q = {key: rng.normal(size=(split.n, dim)).astype(np.float32) for key, dim in (("pool", hidden), ("proj", proj))}
    c = {key: rng.normal(size=(2 * split.n, dim)).astype(np.float32) for key, dim in (("pool", hidden), ("proj", proj))}
    c["proj"][: split.n] = q["proj"] + rng.normal(scale=2.0, size=q["proj"].shape)  # some signal, so acc@1 is not ~0
    c["proj"][split.n :] = q["proj"]
    c["pool"][split.n :] = q["pool"]
    k = cfg.eval.rerank_k

    def new() -> dict:
        scores = score_matrix(q["proj"], c["proj"], "l2")
        return evaluate_scores(split, scores, TASKS, (1,), pair_scorer(model, q, c, torch.device("cpu")), k).metrics

    new_m, old_m = new(), {}
    new_times: list[float] = []
    old_times: list[float] = []
    ratios: list[float] = []
    for _ in range(repeats):
        round_new, round_old = [], 0.0
        for task in TASKS:  # vectorised runs before each task's per-pair run: drift in machine speed hits both alike
            new()  # warm-up after the per-pair loop
            for _ in range(3):
                t = time.perf_counter()
                new()
                round_new.append(time.perf_counter() - t)
            t = time.perf_counter()
            old_m.update(per_pair_accuracy(split, q, c, model.classifier, k, (task,)))
            round_old += time.perf_counter() - t
        ratios.append(round_old / statistics.median(round_new))
        new_times += round_new
        old_times.append(round_old)
    new_t, old_t, speedup = statistics.median(new_times), statistics.median(old_times), statistics.median(ratios)
    same = all(abs(old_m[key] - new_m[key]) < 1e-12 for key in old_m)
    return {
        "id": "P2",
        "queries": split.n,
        "tasks": len(TASKS),
        "rerank_k": k,
        "vectorised_s": new_t,
        "per_pair_loops_s": old_t,
        "rounds": repeats,
        "round_speedups": ratios,
        "speedup": speedup,
        "goal": ">= 100x",
        "met": speedup >= 100,
        "same_acc_at_1": same,
    }


def refresh_share(cfg: ExperimentConfig, data: RunData) -> dict:
    """P3: negative refresh by re-encoding the training set vs reusing training-pass vectors, against epoch time."""
    trainer = Trainer(replace_path(cfg, "train.epochs", 1), data, run_test=False)
    rng = np.random.default_rng(0)
    reencode = _median_time(
        lambda: mine(*trainer.encode_training_split(), 0.5, rng, trainer.forbidden), repeats=2, warmup=0
    )
    q, c = trainer.encode_training_split()
    reuse = _median_time(lambda: mine(q, c, 0.5, rng, trainer.forbidden), repeats=5)
    rec = MemoryRecorder()
    trainer.fit(rec)
    train_s = rec.history("time/train_s")[0][1]
    epoch_reuse = train_s + reuse
    epoch_reencode = train_s + reencode
    return {
        "id": "P3",
        "train_queries": data.train.split.n,
        "train_pass_s": train_s,
        "refresh_reencode_s": reencode,
        "refresh_reuse_s": reuse,
        "share_reencode": reencode / epoch_reencode,
        "share_reuse": reuse / epoch_reuse,
        "goal": "<= 5% of epoch (reuse)",
        "met": reuse / epoch_reuse <= 0.05,
    }


def neighbour_index(data: RunData | None = None, n: int = 4065, dim: int = 128) -> dict:
    """BallTree vs brute force for mining at the full training split's size (n queries, 2n candidates)."""
    rng = np.random.default_rng(0)
    q = rng.normal(size=(n, dim)).astype(np.float32)
    c = rng.normal(size=(2 * n, dim)).astype(np.float32)
    from ablation.training.negatives import Forbidden, nearest_allowed

    forbidden = Forbidden.from_codes(np.arange(2 * n))
    times = {
        name: _median_time(lambda name=name: nearest_allowed(q, c, forbidden, name), repeats=3)
        for name in ("balltree", "brute")
    }
    return {
        "id": "index",
        "queries": n,
        "candidates": 2 * n,
        "dim": dim,
        **{f"{k}_s": v for k, v in times.items()},
        "faster": min(times, key=times.get),
    }


def padding_throughput(
    cfg: ExperimentConfig, data: RunData, split: Split, lengths: tuple[int, ...], n_texts: int
) -> dict:
    """P4: tokens/s of encoding real texts: length-sorted per-batch padding vs fixed max-length padding."""
    from ablation import encoders
    from ablation.data.batching import tokenize
    from models.pooling import Tower

    texts = split.candidate_texts
    texts = [
        texts[i] for i in np.random.default_rng(0).choice(len(texts), size=min(n_texts, len(texts)), replace=False)
    ]
    tower = Tower(encoders.encoder(cfg.model, len(data.tokenizer)), "mean").eval()
    out: dict = {"id": "P4", "texts": len(texts), "goal": ">= 1.3x at the longest max_length", "by_max_length": {}}
    for max_length in lengths:
        tokens = tokenize(data.tokenizer, texts, max_length)
        real = sum(len(t) for t in tokens)

        def run(fixed: int | None, tokens: list = tokens) -> None:
            encode(lambda b: {"v": tower(**b)}, TokenTexts(tokens, data.pad_id, fixed), 32, "cpu", "bench")

        bucketed = _median_time(lambda: run(None), repeats=2)
        fixed = _median_time(lambda max_length=max_length: run(max_length), repeats=2)
        out["by_max_length"][max_length] = {
            "real_tokens": real,
            "truncated_share": float(np.mean([len(t) == max_length for t in tokens])),
            "bucketed_tokens_per_s": real / bucketed,
            "fixed_tokens_per_s": real / fixed,
            "ratio": fixed / bucketed,
        }
    out["ratio"] = out["by_max_length"][max(lengths)]["ratio"]
    out["met"] = out["ratio"] >= 1.3
    return out


def study_wall_times(corpus: str | None) -> dict:
    """P5: wall time of the smoke study (run here) and of the last quick study `make ablation` recorded."""
    from ablation.report.build import build_report
    from ablation.study.runner import run_study
    from ablation.tracking.store import Tracker, resolve_tracking_uri

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        uri = f"sqlite:///{Path(tmp) / 'mlflow.db'}"
        run_study(load_config(SMOKE), corpus=corpus, tracking_uri=uri, run_dir=str(Path(tmp) / "run"))
        build_report("smoke", tracking_uri=uri, out_dir=str(Path(tmp) / "report"), experiment="smoke")
        smoke = time.perf_counter() - t
    quick = None
    runs = Tracker(resolve_tracking_uri()).search("quick", {"role": Role.STUDY}, status="FINISHED")
    if runs and runs[0].info.end_time:
        quick = (runs[0].info.end_time - runs[0].info.start_time) / 1000
    return {
        "id": "P5",
        "smoke_s": smoke,
        "quick_s_recorded": quick,
        "goal": "smoke <= 90 s, quick <= 900 s",
        "met": smoke <= 90 and (quick is not None and quick <= 900),
    }


def prefix_cache_speedup(cfg: ExperimentConfig, data: RunData, rounds: int = 2) -> dict:
    """P7: the frozen-prefix cache, side by side with the full encoder: one quick trial (train + validation
    each epoch, no test) and encoding the test split, alternating in `rounds`; the cache's build time
    (in a fresh folder), size on disk, the speed-ups (medians over rounds) and the time that checking the
    stores' digests adds to each opening, against a cached trial."""
    from ablation.evaluation.trained import encode_sides, token_texts

    with tempfile.TemporaryDirectory() as tmp:
        cached_cfg = replace_path(cfg, "data.cache_dir", tmp)
        t = time.perf_counter()
        cached = Trainer(cached_cfg, data)  # builds the train, validation and test stores
        build = time.perf_counter() - t
        size = sum(p.stat().st_size for p in Path(tmp).glob("prefix-*.npy"))
        full = Trainer(replace_path(cfg, "model.prefix_cache", False), data)
        trial, encoding, cached_trial = [], [], []
        for _ in range(rounds):
            times = {}
            for name, trainer_cfg in (("cached", cached_cfg), ("full", replace_path(cfg, "model.prefix_cache", False))):
                t = time.perf_counter()
                Trainer(trainer_cfg, data, run_test=False).fit(MemoryRecorder())
                times[name] = time.perf_counter() - t
            trial.append(times["full"] / times["cached"])
            for name, trainer in (("cached", cached), ("full", full)):
                texts = trainer.texts(data.test) if name == "cached" else token_texts(data.pad_id)(data.test)
                t = time.perf_counter()
                encode_sides(trainer.model, *texts, cfg.eval.batch_size, trainer.device, cfg.train.precision)
                times[f"encode_{name}"] = time.perf_counter() - t
            encoding.append(times["encode_full"] / times["encode_cached"])
            cached_trial.append(times["cached"])
        stores = list(Path(tmp).glob("prefix-*[0-9a-f].npy"))
        verify_s = _median_time(lambda: [verify(p) for p in stores], repeats=3)  # what each open adds
    trial_x, encode_x = statistics.median(trial), statistics.median(encoding)
    verify_share = verify_s / statistics.median(cached_trial)
    return {
        "id": "P7",
        "frozen_layers": cfg.model.freeze_layers,
        "build_s": build,
        "size_mib": size / 2**20,
        "trial_speedup": trial_x,
        "encode_test_speedup": encode_x,
        "verify_s": verify_s,
        "verify_share_of_trial": verify_share,
        "rounds": rounds,
        "goal": ">= 2x per trial, >= 2.5x encoding; checking the stores' digests <= 2% of a cached trial",
        "met": trial_x >= 2 and encode_x >= 2.5 and verify_share <= 0.02,
    }
