"""P9: what a training step at 128 tokens costs under each loss, and how far it runs from the machine's
limit: the step's FLOP count (torch's FlopCounterMode over one step), divided by its median time, against
the rate of a plain matrix multiply of the model's own shape measured in the same process, in fp32 and
(where the CPU computes it natively) bf16."""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from ablation.bench.measures import step_batches
from ablation.config import ExperimentConfig, replace_path
from ablation.data.run_data import RunData
from ablation.runtime import cpu_bf16_flags
from ablation.training.negatives import mine
from ablation.training.recorder import MemoryRecorder
from ablation.training.trainer import Trainer

GOAL = 0.5  # bf16: the step's FLOP rate at least half the machine's matmul rate
LOSSES = ("triplet", "contrastive")


def matmul_rate(dtype: torch.dtype, m: int, k: int, n: int, repeats: int = 10) -> float:
    """GFLOP/s of `[m, k] @ [k, n]` in `dtype` (median of `repeats` after a warm-up)."""
    a, b = torch.randn(m, k).to(dtype), torch.randn(k, n).to(dtype)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - t)
    return 2 * m * k * n / statistics.median(times) / 1e9


def step_flops(trainer: Trainer, idx: np.ndarray, negatives: np.ndarray) -> int:
    """FLOPs of one `train_step` (forward, backward and optimiser), as torch's counter sees them."""
    counter = FlopCounterMode(display=False)
    with counter:
        trainer.train_step(idx, negatives, MemoryRecorder())
    return int(counter.get_total_flops())


def step_rates(cfg: ExperimentConfig, data: RunData, steps: int) -> dict:
    """Per precision: each loss's median step time on the same batches and negatives (interleaved), the
    contrastive/triplet time ratio, the step's GFLOP/s and the matmul GFLOP/s of the FFN's shape."""
    cpu = replace_path(cfg, "train.device", "cpu")
    precisions = ["fp32", *(["bf16"] if cpu_bf16_flags() else [])]
    hidden = None
    row: dict = {"id": "P9", "max_length": cfg.model.max_length, "batch_size": cfg.train.batch_size, "steps": steps}
    row |= {"frozen_layers": cfg.model.freeze_layers, "torch_threads": torch.get_num_threads(), "by_precision": {}}
    for precision in precisions:
        trainers = {
            loss: Trainer(replace_path(replace_path(cpu, "train.precision", precision), "train.loss", loss), data)
            for loss in LOSSES
        }
        first = trainers["triplet"]
        hidden = first.model.query_tower.encoder.config.hidden_size
        q, c = first.encode_training_split()
        negs = mine(q, c, cfg.negatives.random_rate, np.random.default_rng(0), first.forbidden).index
        batches = step_batches(cfg, data, steps + 2)
        flops = {loss: step_flops(t, batches[0], negs) for loss, t in trainers.items()}  # also the warm-up
        times: dict[str, list[float]] = {loss: [] for loss in LOSSES}
        for idx in batches[2:]:
            for loss, t in trainers.items():
                start = time.perf_counter()
                t.train_step(idx, negs, MemoryRecorder())
                times[loss].append(time.perf_counter() - start)
        tokens = cfg.train.batch_size * 3 * cfg.model.max_length
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        peak = matmul_rate(dtype, tokens, hidden, 4 * hidden)
        got = {loss: flops[loss] / statistics.median(times[loss]) / 1e9 for loss in LOSSES}
        row["by_precision"][precision] = {
            "step_s": {loss: statistics.median(times[loss]) for loss in LOSSES},
            "contrastive_over_triplet": statistics.median(
                c / t for c, t in zip(times["contrastive"], times["triplet"], strict=True)
            ),
            "step_gflop": {loss: flops[loss] / 1e9 for loss in LOSSES},
            "step_gflops_per_s": got,
            "matmul_gflops_per_s": peak,
            "share_of_matmul": {loss: got[loss] / peak for loss in LOSSES},
        }
    share = row["by_precision"].get("bf16", row["by_precision"]["fp32"])["share_of_matmul"]["triplet"]
    row |= {"goal": f"bf16 step at >= {GOAL} of the matmul rate", "met": share >= GOAL}
    return row
