"""`make bench`: speed and memory of the harness, each ratio measured side by side in one process.

P1 harness step vs bare loop · P2 vectorised evaluation vs per-pair loops · P3 negative refresh share of
an epoch · P4 length-bucketed vs fixed padding · P5 study wall times · P6 peak memory per arm; plus the
neighbour index choice. Ratios are medians over repeats after a warm-up. Writes reports/bench/bench.json.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ablation.bench.table import readable_table
from ablation.config import TASKS, ExperimentConfig, load_config, replace_path
from ablation.data.batching import bucketed_batches, pad_batch
from ablation.data.corpus import Split, read_split, resolve_corpus
from ablation.data.run_data import RunData, load_run_data
from ablation.data.tasks import TaskMasks
from ablation.evaluation.encoding import encode
from ablation.evaluation.ranking import evaluate_scores, score_matrix
from ablation.io import REPO_ROOT, write_text_atomic
from ablation.runtime import describe_device
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


def p1_step_overhead(cfg: ExperimentConfig, data: RunData, steps: int) -> dict:
    """Harness `_step` (recording + MLflow logging) vs a bare forward/backward/step on the same batches."""
    from ablation.tracking.store import Tracker

    with tempfile.TemporaryDirectory() as tmp:
        tracker = Tracker(f"sqlite:///{Path(tmp) / 'mlflow.db'}")
        trainer = Trainer(cfg, data, MemoryRecorder())
        q, c = trainer._train_vectors()
        negs = mine(q, c, cfg.negatives.random_rate, np.random.default_rng(0), trainer.forbidden).index
        batches: list[np.ndarray] = []
        rng = np.random.default_rng(0)
        while len(batches) < steps + 1:  # as many epochs as the steps need
            batches += bucketed_batches(
                [len(t) for t in data.train.query_tokens], cfg.train.batch_size, cfg.train.bucket_size, rng
            )
        batches = batches[: steps + 1]
        bare_model = build_model(cfg, data, trainer.device).train()  # from_pretrained leaves encoders in eval mode
        bare_opt = torch.optim.Adam([p for p in bare_model.parameters() if p.requires_grad], lr=cfg.train.lr)
        tr, pad = data.train, data.pad_id

        def bare(idx: np.ndarray) -> None:
            b = [
                pad_batch([toks[i] for i in ids], pad)
                for toks, ids in ((tr.query_tokens, idx), (tr.cand_tokens, idx), (tr.cand_tokens, negs[idx]))
            ]
            out = bare_model(*[{k: v.to(trainer.device) for k, v in x.items()} for x in b])
            loss = trainer.loss_fn(out)["total"]
            bare_opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.train.grad_clip is not None:
                torch.nn.utils.clip_grad_norm_(
                    [p for p in bare_model.parameters() if p.requires_grad], cfg.train.grad_clip
                )
            bare_opt.step()

        harness_t, bare_t = [], []
        with tracker.run("bench", "p1", {"role": "bench"}) as rec:
            trainer.rec = rec
            trainer._step(batches[0], negs, None)  # warm-up both
            bare(batches[0])
            for idx in batches[1:]:  # interleaved, so drift in machine speed hits both alike
                t = time.perf_counter()
                trainer._step(idx, negs, None)
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
    }


def _old_evaluate(
    split, q: dict, c: dict, classifier: torch.nn.Module, k: int, tasks: tuple[str, ...] = TASKS
) -> dict[str, float]:
    """The old scripts' way: per task, per query, distances in a loop and one classifier call per pair."""
    masks = TaskMasks(split)
    out = {}
    for task in tasks:
        mask = masks.mask(task)
        hits_retrieval = hits_rerank = 0
        for i in range(split.n):
            pool = np.flatnonzero(mask[i])
            dist = np.linalg.norm(c["proj"][pool] - q["proj"][i], axis=1)
            true_d = dist[pool == i][0]
            rank = int((dist <= true_d).sum())
            hits_retrieval += rank == 1
            order = pool[np.argsort(dist, kind="stable")][:k]
            probs = []
            for j in order:
                with torch.no_grad():
                    logits = classifier(
                        torch.as_tensor(q["proj"][i : i + 1]),
                        torch.as_tensor(q["pool"][i : i + 1]),
                        torch.as_tensor(c["proj"][j : j + 1]),
                        torch.as_tensor(c["pool"][j : j + 1]),
                    )
                probs.append(float(torch.softmax(logits, -1)[0, 1]))
            best = order[int(np.argmax(probs))]
            hits_rerank += best == i
        out[f"retrieval/acc_at_1/{task}"] = hits_retrieval / split.n
        out[f"rerank/acc_at_1/{task}"] = hits_rerank / split.n
    return out


def p2_evaluation(cfg: ExperimentConfig, data: RunData, split: Split, repeats: int) -> dict:
    """All 8 tasks on a split: vectorised vs per-pair loops, same embeddings and top-K. In each of `repeats`
    rounds the per-pair evaluation (seconds) runs task by task, each task after a warm-up and three timed
    vectorised runs of all 8 tasks (milliseconds); the speed-up is the median over rounds of per-pair time /
    median vectorised time."""
    from ablation.evaluation.trained import pair_scorer

    rng = np.random.default_rng(0)
    model = build_model(replace_path(cfg, "model.sharing", "shared"), data, torch.device("cpu"))
    hidden, proj = model.query_head.in_features, model.query_head.out_features
    q = {
        "pool": rng.normal(size=(split.n, hidden)).astype(np.float32),
        "proj": rng.normal(size=(split.n, proj)).astype(np.float32),
    }
    c = {
        "pool": rng.normal(size=(2 * split.n, hidden)).astype(np.float32),
        "proj": rng.normal(size=(2 * split.n, proj)).astype(np.float32),
    }
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
            old_m.update(_old_evaluate(split, q, c, model.classifier, k, (task,)))
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


def p3_refresh(cfg: ExperimentConfig, data: RunData) -> dict:
    """Negative refresh by re-encoding the training set vs reusing training-pass vectors, against epoch time."""
    trainer = Trainer(replace_path(cfg, "train.epochs", 1), data, MemoryRecorder(), test=False)
    rng = np.random.default_rng(0)
    reencode = _median_time(lambda: mine(*trainer._train_vectors(), 0.5, rng, trainer.forbidden), repeats=2, warmup=0)
    q, c = trainer._train_vectors()
    reuse = _median_time(lambda: mine(q, c, 0.5, rng, trainer.forbidden), repeats=5)
    rec = MemoryRecorder()
    trainer.rec = rec
    trainer.fit()
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


def p4_padding(cfg: ExperimentConfig, data: RunData, split: Split, lengths: tuple[int, ...], n_texts: int) -> dict:
    """Tokens/s of encoding real corpus texts: length-sorted per-batch padding vs fixed max-length padding."""
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
            encode(lambda b: {"v": tower(**b)}, tokens, data.pad_id, 32, "cpu", "bench", fixed_length=fixed)

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


def p5_studies(corpus: str | None) -> dict:
    """Wall time of the smoke study (run here) and of the last quick study `make ablation` recorded."""
    from ablation.study.runner import run_study
    from ablation.tracking.store import Tracker, resolve_tracking_uri

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        run_study(
            load_config(SMOKE),
            corpus=corpus,
            tracking_uri=f"sqlite:///{Path(tmp) / 'mlflow.db'}",
            run_dir=str(Path(tmp) / "run"),
            report=True,
        )
        smoke = time.perf_counter() - t
    quick = None
    runs = Tracker(resolve_tracking_uri()).search("quick", {"role": "study"}, status="FINISHED")
    if runs and runs[0].info.end_time:
        quick = (runs[0].info.end_time - runs[0].info.start_time) / 1000
    return {
        "id": "P5",
        "smoke_s": smoke,
        "quick_s_recorded": quick,
        "goal": "smoke <= 90 s, quick <= 900 s",
        "met": smoke <= 90 and (quick is not None and quick <= 900),
    }


def p6_memory(corpus: str | None) -> dict:
    """Peak resident memory (VmHWM; ru_maxrss would inherit the parent's) of one quick run (1 epoch) per arm."""
    code = (
        "import sys,torch;from ablation.config import load_config;from ablation.data.run_data import load_run_data;"
        "from ablation.training.trainer import Trainer;from ablation.training.recorder import MemoryRecorder;"
        "cfg=load_config(sys.argv[1],['model.sharing='+sys.argv[2],'train.epochs=1']);"
        "Trainer(cfg,load_run_data(cfg,sys.argv[3] or None),MemoryRecorder()).fit();"
        "print([l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])"
    )
    out = {"id": "P6"}
    for arm in ("shared", "unshared"):
        proc = subprocess.run(
            [sys.executable, "-c", code, str(QUICK), arm, corpus or ""],
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            check=True,
        )
        out[f"{arm}_peak_rss_mib"] = int(proc.stdout.strip().splitlines()[-1]) / 1024
    out["ratio_unshared_over_shared"] = out["unshared_peak_rss_mib"] / out["shared_peak_rss_mib"]
    return out


def run_bench(corpus: str | None = None, out: str | None = None, quick: bool = False) -> dict:
    """Run every measure and write bench.json plus a readable table."""
    cfg = load_config(QUICK)
    data = load_run_data(cfg, corpus)
    full_test = read_split(resolve_corpus(corpus, cfg.data.corpus), "test")
    results = {"device": describe_device(torch.device("cpu")), "torch_threads": torch.get_num_threads(), "results": []}
    measures: list[Callable[[], dict]] = [
        lambda: p1_step_overhead(replace_path(cfg, "model.sharing", "shared"), data, 6 if quick else 24),
        lambda: p1_step_overhead(replace_path(cfg, "model.sharing", "unshared"), data, 6 if quick else 24),
        lambda: p2_evaluation(cfg, data, full_test, 1 if quick else 5),
        lambda: p3_refresh(cfg, data),
        lambda: neighbour_index(),
        lambda: p4_padding(cfg, data, full_test, (128, 256) if quick else (128, 256, 512), 96 if quick else 192),
    ]
    if not quick:
        measures += [lambda: p5_studies(corpus), lambda: p6_memory(corpus)]
    for measure in measures:
        r = measure()
        results["results"].append(r)
        print(json.dumps(r), flush=True)
    path = Path(out) if out else REPO_ROOT / "reports" / "bench" / "bench.json"
    write_text_atomic(json.dumps(results, indent=2), path)
    table = readable_table(results["results"])
    write_text_atomic(table + "\n", path.with_suffix(".md"))
    print(table)
    print(f"bench written: {path} and {path.with_suffix('.md')}")
    return results
