"""Measures that need processes of their own: the peak memory of one quick run per arm (P6), and worker
processes training at once with split or oversubscribed torch threads (`threads`)."""

from __future__ import annotations

import multiprocessing
import os
import statistics
import time
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Barrier

import numpy as np
import torch

from ablation.bench.measures import QUICK, step_batches
from ablation.config import load_config
from ablation.data.run_data import load_run_data
from ablation.training.negatives import mine
from ablation.training.recorder import MemoryRecorder
from ablation.training.trainer import Trainer


def _peak_rss_of_a_quick_run(arm: str, corpus: str | None, result: Connection) -> None:
    """In a fresh process: train one quick epoch of `arm`, send back the peak resident memory (VmHWM)."""
    cfg = load_config(QUICK, [f"model.sharing={arm}", "train.epochs=1"])
    Trainer(cfg, load_run_data(cfg, corpus)).fit(MemoryRecorder())
    with open("/proc/self/status") as status:
        result.send(next(int(line.split()[1]) for line in status if line.startswith("VmHWM")))


def peak_memory(corpus: str | None) -> dict:
    """P6: peak resident memory of one quick run (1 epoch) per arm, each in its own process (a child's
    ru_maxrss would include what it inherited)."""
    out: dict = {"id": "P6"}
    spawn = multiprocessing.get_context("spawn")
    for arm in ("shared", "unshared"):
        receive, send = spawn.Pipe(duplex=False)
        proc = spawn.Process(target=_peak_rss_of_a_quick_run, args=(arm, corpus, send))
        proc.start()
        kib = receive.recv()
        proc.join()
        out[f"{arm}_peak_rss_mib"] = kib / 1024
    out["ratio_unshared_over_shared"] = out["unshared_peak_rss_mib"] / out["shared_peak_rss_mib"]
    return out


def _timed_steps(arm: str, corpus: str | None, threads: int, steps: int, ready: Barrier, result: Connection) -> None:
    """In a fresh process with `threads` torch threads: set up a quick trainer, wait for the other workers,
    then time `steps` training steps and send the seconds back."""
    torch.set_num_threads(threads)
    cfg = load_config(QUICK, [f"model.sharing={arm}"])
    data = load_run_data(cfg, corpus)
    trainer = Trainer(cfg, data, run_test=False)
    q, c = trainer.encode_training_split()
    negs = mine(q, c, cfg.negatives.random_rate, np.random.default_rng(0), trainer.forbidden).index
    batches = step_batches(cfg, data, steps + 1)
    recorder = MemoryRecorder()
    trainer.train_step(batches[0], negs, recorder)  # warm-up
    ready.wait()
    t = time.perf_counter()
    for idx in batches[1 : steps + 1]:
        trainer.train_step(idx, negs, recorder)
    result.send(time.perf_counter() - t)


def worker_threads(corpus: str | None, workers: int = 2, steps: int = 24, rounds: int = 2) -> dict:
    """Threads: `workers` processes train quick steps at once (one per arm, as `WORKERS=N` runs them), each
    with cores // workers torch threads (the runner's default) or with every core (torch's default, which
    oversubscribes). The wall time until the last worker is done, median over alternating rounds."""
    cores = os.cpu_count() or 1
    settings = {"split": max(1, cores // workers), "all_cores": cores}
    spawn = multiprocessing.get_context("spawn")
    walls: dict[str, list[float]] = {name: [] for name in settings}
    for _ in range(rounds):
        for name, threads in settings.items():
            ready = spawn.Barrier(workers)
            pipes = [spawn.Pipe(duplex=False) for _ in range(workers)]
            arms = ["shared", "unshared"]
            procs = [
                spawn.Process(target=_timed_steps, args=(arms[i % 2], corpus, threads, steps, ready, pipes[i][1]))
                for i in range(workers)
            ]
            for p in procs:
                p.start()
            for _, send in pipes:
                send.close()  # so that a worker that dies ends recv() with EOFError instead of a hang
            try:
                times = [receive.recv() for receive, _ in pipes]
            except EOFError:
                for p in procs:
                    p.terminate()
                raise RuntimeError("a bench worker died; its traceback is above") from None
            for p in procs:
                p.join()
            walls[name].append(max(times))
    split, oversubscribed = statistics.median(walls["split"]), statistics.median(walls["all_cores"])
    return {
        "id": "threads",
        "cores": cores,
        "workers": workers,
        "steps": steps,
        "threads_split": settings["split"],
        "split_s": split,
        "all_cores_s": oversubscribed,
        "rounds": rounds,
        "faster": "split" if split <= oversubscribed else "all_cores",
        "ratio": oversubscribed / split,
    }
