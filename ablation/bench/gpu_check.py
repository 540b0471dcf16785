"""`make gpu-check`: the CUDA path in one table. The tests marked `device` on the GPU, bench P1 and the
frozen-prefix cache measure (P7) under bf16 autocast, one quick trial trained twice under one seed, to
see that the CUDA path repeats, and one level of the depth sweep (every layer trained, batch 128, one seed)
with its step time. Sized for at most 8 minutes on one GPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ablation.bench.measures import QUICK, prefix_cache_speedup, step_overhead
from ablation.bench.table import readable_table
from ablation.config import load_config, replace_path
from ablation.data.run_data import load_run_data
from ablation.errors import UserError
from ablation.io import REPO_ROOT, write_text_atomic
from ablation.runtime import describe_device, resolve_device
from ablation.training.recorder import MemoryRecorder
from ablation.training.trainer import Trainer


def device_tests(device: str) -> dict:
    """The tests marked `device`, run by pytest in a child process with ABLATION_TEST_DEVICE=`device`."""
    env = {**os.environ, "ABLATION_TEST_DEVICE": device}
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "device", "-p", "no:cacheprovider"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    if proc.returncode != 0:
        print(proc.stdout[-6000:], proc.stderr[-2000:], file=sys.stderr)
    return {
        "id": "tests",
        "device": device,
        "summary": lines[-1].strip("= ") if lines else proc.stderr.strip()[-200:],
        "seconds": time.perf_counter() - t,
        "met": proc.returncode == 0,
    }


def repeat_trial(cfg_path: Path, overrides: list[str], corpus: str | None) -> dict:
    """One quick trial (training and validation, no test) twice under one seed: the same losses and the same
    validation metrics, to the last digit, if the path repeats."""
    cfg = load_config(cfg_path, overrides)
    data = load_run_data(cfg, corpus)
    runs = []
    for _ in range(2):
        rec = MemoryRecorder()
        trainer = Trainer(cfg, data, run_test=False)
        t = time.perf_counter()
        trainer.fit(rec)
        runs.append((np.array(trainer.result.losses), rec, time.perf_counter() - t))
    (a, rec_a, s_a), (b, rec_b, s_b) = runs
    key = cfg.study.objective
    val_a, val_b = [v for _, v in rec_a.history(key)], [v for _, v in rec_b.history(key)]
    return {
        "id": "repeat",
        "steps": len(a),
        "max_abs_loss_diff": float(np.max(np.abs(a - b))) if len(a) == len(b) else float("inf"),
        "metric": key,
        "val_first": val_a,
        "val_second": val_b,
        "trial_s": [s_a, s_b],
        "met": len(a) == len(b) and bool(np.array_equal(a, b)) and val_a == val_b,
    }


DEPTH = REPO_ROOT / "experiments" / "depth.yaml"
GPU_BATCH = 128  # depth.yaml on a GPU: the same file with a larger batch


def sweep_level(cfg_path: Path, overrides: list[str], corpus: str | None, level: int = -1) -> dict:
    """One level of a sweep (depth.yaml's last: every layer trained) run as its sub-study, with one seed
    and no zero-shot, into a temporary store: the sweep path end to end on the device, with the level's wall
    time and its median training step (P1's harness step, unshared: the larger arm)."""
    from ablation.study.runner import run_study
    from ablation.study.sweep import levels

    sets = [*overrides, "study.seeds=[1]", "study.zero_shot=false", "tracking.system_metrics=false"]
    cfg = load_config(cfg_path, sets)
    with tempfile.TemporaryDirectory() as tmp:
        lv = levels(cfg, Path(tmp))[level]
        t = time.perf_counter()
        run_study(lv.cfg, corpus, f"sqlite:///{Path(tmp) / 'mlflow.db'}", str(lv.folder))
        wall = time.perf_counter() - t
    data = load_run_data(lv.cfg, corpus)
    step = step_overhead(replace_path(lv.cfg, "model.sharing", "unshared"), data, 24)
    return {
        "id": "sweep-level",
        "level": lv.label,
        "batch_size": lv.cfg.train.batch_size,
        "precision": lv.cfg.train.precision,
        "runs": len(lv.cfg.study.arms) * (lv.cfg.study.n_trials + 1),
        "level_s": wall,
        "step_s": step["harness_step_s"],
        "met": True,
    }


def gpu_check(corpus: str | None = None, device: str = "cuda", precision: str = "bf16", out: str | None = None) -> dict:
    """Run the three checks on `device` and write gpu-check.json and .md (reports/gpu-check/)."""
    where = resolve_device(device)
    if where.type != "cuda" and device == "cuda":
        raise UserError("gpu-check: CUDA is not available")
    overrides = [f"train.device={device}", f"train.precision={precision}"]
    results: dict = {"device": describe_device(where), "torch": torch.__version__, "precision": precision}
    rows = [device_tests(device)]
    print(json.dumps(rows[-1]), flush=True)
    cfg = load_config(QUICK, overrides)
    data = load_run_data(cfg, corpus)
    for arm in ("shared", "unshared"):
        rows.append(step_overhead(replace_path(cfg, "model.sharing", arm), data, 24))
        print(json.dumps(rows[-1]), flush=True)
    rows.append(prefix_cache_speedup(cfg, data, 2))
    print(json.dumps(rows[-1]), flush=True)
    rows.append(repeat_trial(QUICK, overrides, corpus))
    print(json.dumps(rows[-1]), flush=True)
    rows.append(sweep_level(DEPTH, [*overrides, f"train.batch_size={GPU_BATCH}"], corpus))
    print(json.dumps(rows[-1]), flush=True)
    results["results"] = rows
    path = Path(out) if out else REPO_ROOT / "reports" / "gpu-check" / "gpu-check.json"
    write_text_atomic(json.dumps(results, indent=2), path)
    table = f"{results['device']}, torch {results['torch']}, {precision}\n\n" + readable_table(rows)
    write_text_atomic(table + "\n", path.with_suffix(".md"))
    print(table)
    return results
