"""P8: bf16 under CPU autocast against fp32, on CPUs that compute bf16 natively (AVX-512 BF16 or AMX):
the speed of a quick training step, and what it does to a quick trial's validation acc@1 under one seed."""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch

from ablation.bench.measures import step_batches
from ablation.config import ExperimentConfig, replace_path
from ablation.data.run_data import RunData
from ablation.runtime import cpu_bf16_flags
from ablation.training.negatives import mine
from ablation.training.recorder import MemoryRecorder
from ablation.training.trainer import Trainer

GOAL = 1.6


def cpu_bf16_speedup(cfg: ExperimentConfig, data: RunData, steps: int, trial: bool = True) -> dict:
    """Median step time in fp32 and bf16 on the same batches and negatives, interleaved so that drift in
    machine speed hits both alike; then (with `trial`) one quick trial, no test, under each precision."""
    flags = cpu_bf16_flags()
    row: dict = {"id": "P8", "cpu_bf16_flags": flags, "goal": f">= {GOAL}x step speed-up where the CPU has bf16"}
    if not flags:
        return {**row, "met": True, "skipped": "this CPU has neither AVX-512 BF16 nor AMX: bf16 is refused here"}
    cpu = replace_path(cfg, "train.device", "cpu")
    trainers = {p: Trainer(replace_path(cpu, "train.precision", p), data) for p in ("fp32", "bf16")}
    first = trainers["fp32"]
    q, c = first.encode_training_split()
    negs = mine(q, c, cfg.negatives.random_rate, np.random.default_rng(0), first.forbidden).index
    batches = step_batches(cfg, data, steps + 1)
    times: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for t in trainers.values():
        t.train_step(batches[0], negs, MemoryRecorder())  # warm-up: oneDNN picks its kernels on first use
    for idx in batches[1:]:
        for precision, t in trainers.items():
            start = time.perf_counter()
            t.train_step(idx, negs, MemoryRecorder())
            times[precision].append(time.perf_counter() - start)
    ratio = statistics.median(f / b for f, b in zip(times["fp32"], times["bf16"], strict=True))
    row |= {
        "steps": steps,
        "fp32_step_s": statistics.median(times["fp32"]),
        "bf16_step_s": statistics.median(times["bf16"]),
        "ratio": ratio,
        "met": ratio >= GOAL,
        "torch_threads": torch.get_num_threads(),
    }
    if trial:
        acc, mrr = {}, {}
        for precision in ("fp32", "bf16"):
            t = Trainer(replace_path(cpu, "train.precision", precision), data, run_test=False)
            t.fit(MemoryRecorder())
            acc[precision] = t.result.val_history[-1][cfg.study.objective]
            mrr[precision] = t.result.val_history[-1]["val/retrieval/mrr/mean"]  # finer-grained than acc@1
        row |= {"val_acc_fp32": acc["fp32"], "val_acc_bf16": acc["bf16"], "val_acc_diff": acc["bf16"] - acc["fp32"]}
        row |= {"val_mrr_fp32": mrr["fp32"], "val_mrr_bf16": mrr["bf16"]}
    return row
